package server

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Store probe timing: a cheap read of every table every probeEvery, given probeTimeout to answer. /readyz
// reports the last result, and fails when no probe has succeeded for probeEvery + 2×probeTimeout (a probe
// that hangs past its deadline).
const (
	probeEvery   = 10 * time.Second
	probeTimeout = 2 * time.Second
)

// storeProber is what readiness probes: store.Health's cheap read.
type storeProber interface {
	Probe(ctx context.Context) error
}

// readiness probes the store periodically so that /readyz fails, with the reason, when the store cannot
// read (pages overwritten, a disk gone), rather than answering "ready" while every read fails.
type readiness struct {
	store   storeProber
	now     func() time.Time
	every   time.Duration // zero: probeEvery
	timeout time.Duration // zero: probeTimeout

	mu      sync.Mutex
	lastAt  time.Time // when the last probe ended
	lastOK  time.Time // when the last successful probe ended
	lastErr error
}

// probe runs one probe with its deadline and records the result.
func (r *readiness) probe(ctx context.Context) {
	timeout := r.timeout
	if timeout == 0 {
		timeout = probeTimeout
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	err := r.store.Probe(pctx)
	cancel()
	if err != nil && pctx.Err() != nil && ctx.Err() == nil {
		err = fmt.Errorf("the store did not answer a read within %s: %w", timeout, err)
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastAt, r.lastErr = now, err
	if err == nil {
		r.lastOK = now
	}
}

// Run probes every r.every until ctx ends.
func (r *readiness) Run(ctx context.Context) error {
	every := r.every
	if every == 0 {
		every = probeEvery
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		r.probe(ctx)
	}
}

// check returns why the store is not ready, or nil.
func (r *readiness) check() error {
	every, timeout := r.every, r.timeout
	if every == 0 {
		every = probeEvery
	}
	if timeout == 0 {
		timeout = probeTimeout
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.lastAt.IsZero():
		return fmt.Errorf("the store has not been probed yet")
	case r.lastErr != nil:
		return fmt.Errorf("the store cannot read (probe at %s): %w; run `kith store check` and restore from a backup if it finds damage",
			r.lastAt.UTC().Format(time.RFC3339), r.lastErr)
	case r.now().Sub(r.lastOK) > every+2*timeout:
		return fmt.Errorf("no store probe has succeeded since %s: a read is hanging", r.lastOK.UTC().Format(time.RFC3339))
	}
	return nil
}
