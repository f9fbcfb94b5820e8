package ca

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"sync"
	"time"
)

// UpstreamStatus is how the CA's calls to its upstream authority have gone.
type UpstreamStatus struct {
	Name          string    // Config.UpstreamName
	Errors        uint64    // failed calls since the CA started
	Failures      int       // failed calls since the last success; 0 when the last call succeeded
	LastError     string    // the last failure, kept after a success; empty if none yet
	LastErrorAt   time.Time // zero if none yet
	LastSuccessAt time.Time // zero if none yet
	// RetryAt is when Run calls the upstream again after a failure; zero while the last call succeeded.
	RetryAt time.Time
}

// Status is the CA's signing intermediate, its rotation schedule and its upstream, for `kith ca show` and
// `kith status`.
type Status struct {
	// ServerName is the server whose intermediate this is, for CAs sharing a store (Shared); else empty.
	ServerName           string
	IntermediateID       string
	IntermediateNotAfter time.Time
	// PrepareAt is when the next intermediate is (or was) prepared, ActivateAt when it takes over.
	PrepareAt, ActivateAt time.Time
	// Upstream is nil for a self-signed CA.
	Upstream *UpstreamStatus
}

// Status returns the signing intermediate's expiry, the next rotation and the upstream's state.
func (c *CA) Status() Status {
	c.mu.Lock()
	v := c.view()
	c.mu.Unlock()
	st := Status{ServerName: c.owner}
	if v.inter != nil {
		st.IntermediateID, st.IntermediateNotAfter = v.inter.ID, v.inter.NotAfter
		st.PrepareAt, st.ActivateAt = prepareAt(v.inter), activateAt(v.inter)
	} else if cur := c.state.Load(); cur.x509Cert != nil {
		// Another server retired this one's intermediate; it signs with it until Run makes a new one.
		st.IntermediateID, st.IntermediateNotAfter = hex.EncodeToString(cur.x509Cert.SubjectKeyId), cur.x509NotAfter
		st.PrepareAt, st.ActivateAt = c.now(), c.now()
	}
	if v.nextInter != nil {
		st.PrepareAt = v.nextInter.CreatedAt
	}
	if c.upstream != nil {
		us := c.upstream.status()
		st.Upstream = &us
	}
	return st
}

// retryWait is how long Run waits after failures failed upstream calls in a row: 1 s, doubling, capped at
// max.
func retryWait(failures int, max time.Duration) time.Duration {
	d := time.Second
	for i := 1; i < failures && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}

// observedUpstream is the configured upstream authority with the outcome of every call recorded.
type observedUpstream struct {
	UpstreamAuthority
	name     string
	now      func() time.Time
	retryMax time.Duration

	mu sync.Mutex
	st UpstreamStatus
	// mintFailures and rootsFailures are the current streaks of each call: a roots call that works while
	// minting fails does not reset the backoff.
	mintFailures, rootsFailures int
}

var _ UpstreamAuthority = (*observedUpstream)(nil)

func (o *observedUpstream) MintX509CA(ctx context.Context, req MintRequest) (MintResult, error) {
	res, err := o.UpstreamAuthority.MintX509CA(ctx, req)
	o.record(ctx, &o.mintFailures, err)
	return res, err
}

func (o *observedUpstream) X509Roots(ctx context.Context) ([]*x509.Certificate, error) {
	roots, err := o.UpstreamAuthority.X509Roots(ctx)
	o.record(ctx, &o.rootsFailures, err)
	return roots, err
}

// record counts the outcome of one call; streak is that call's failure streak. o.mu must not be held.
func (o *observedUpstream) record(ctx context.Context, streak *int, err error) {
	if err != nil && ctx.Err() != nil {
		return // the CA is stopping: not the upstream's failure
	}
	now := o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	if err == nil {
		*streak = 0
		o.st.LastSuccessAt = now
	} else {
		*streak++
		o.st.Errors++
		o.st.LastError, o.st.LastErrorAt = err.Error(), now
	}
	o.st.Failures = max(o.mintFailures, o.rootsFailures)
	if o.st.Failures == 0 {
		o.st.RetryAt = time.Time{}
	} else if err != nil {
		o.st.RetryAt = now.Add(retryWait(o.st.Failures, o.retryMax))
	}
}

func (o *observedUpstream) status() UpstreamStatus {
	o.mu.Lock()
	defer o.mu.Unlock()
	st := o.st
	st.Name = o.name
	return st
}
