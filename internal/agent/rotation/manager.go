package rotation

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/svid/cache"
)

const (
	signBatch       = 250
	signParallelism = 4
)

// Signer asks the server to sign workload CSRs.
type Signer interface {
	SignX509SVIDs(ctx context.Context, in *agentv1.SignX509SVIDsRequest, opts ...grpc.CallOption) (*agentv1.SignX509SVIDsResponse, error)
}

var _ Signer = agentv1.AgentServiceClient(nil)

// Cache is the agent cache the Manager reads entries from and stores SVIDs in.
type Cache interface {
	Entries() []cache.Entry
	SVIDs() map[string]*cache.SVID
	SetSVIDs(map[string]*cache.SVID)
	Changed() <-chan struct{}
}

var _ Cache = (*cache.Cache)(nil)

// Config builds a Manager.
type Config struct {
	Cache Cache // required
	// Signer returns the client to sign with, or nil while the agent is not connected to the server (the
	// Manager then waits for Poke); required.
	Signer func() Signer
	// RotateAtPercent is the share of an SVID's life after which it is replaced (± 10 % jitter); zero: 50.
	RotateAtPercent int64
	Now             func() time.Time // zero: time.Now
	Logger          *slog.Logger     // zero: discard
}

// Manager makes sure every entry has a current X.509-SVID: new entries get one at once, and each is
// rotated at RotateAtPercent of its life ± 10 % jitter, well before it expires.
type Manager struct {
	cfg    Config
	signal chan struct{}
}

// New makes a Manager; Run starts it.
func New(cfg Config) (*Manager, error) {
	if cfg.Cache == nil || cfg.Signer == nil {
		return nil, errors.New("rotation: cache and signer are required")
	}
	if cfg.RotateAtPercent == 0 {
		cfg.RotateAtPercent = 50
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, signal: make(chan struct{}, 1)}, nil
}

// Poke asks the Manager to look again: the agent connected, or the entries changed.
func (m *Manager) Poke() {
	select {
	case m.signal <- struct{}{}:
	default:
	}
}

// Run signs and rotates until ctx is done.
func (m *Manager) Run(ctx context.Context) error {
	rotateAt := map[*cache.SVID]time.Time{}
	signedRev := map[string]int64{} // entry ID → entry revision its SVID was made for
	retry := time.Duration(0)
	for {
		changed := m.cfg.Cache.Changed()
		now := m.cfg.Now()
		due, next := m.dueEntries(now, rotateAt, signedRev)
		if len(due) > 0 {
			if client := m.cfg.Signer(); client != nil {
				if err := m.signEntries(ctx, client, due, signedRev); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					retry = min(max(2*retry, 200*time.Millisecond), 10*time.Second)
					m.cfg.Logger.Warn("sign workload svids", "error", err, "entries", len(due), "retry_in", retry)
					next = now.Add(retry)
				} else {
					retry = 0
					continue
				}
			}
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(next.Sub(now), 0)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-m.signal:
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// dueEntries lists entries needing an SVID now and the earliest future rotation time. rotateAt holds
// the rotation time of each SVID the agent has seen.
func (m *Manager) dueEntries(now time.Time, rotateAt map[*cache.SVID]time.Time, signedRev map[string]int64) ([]cache.Entry, time.Time) {
	svids := m.cfg.Cache.SVIDs()
	var due []cache.Entry
	var next time.Time
	pct := float64(m.cfg.RotateAtPercent) / 100
	live := make(map[*cache.SVID]bool, len(svids))
	for _, e := range m.cfg.Cache.Entries() {
		s := svids[e.ID]
		if s == nil {
			due = append(due, e)
			continue
		}
		if rev, ok := signedRev[e.ID]; !ok {
			signedRev[e.ID] = e.Revision // restored from disk: keep until rotation
		} else if rev != e.Revision {
			due = append(due, e)
			continue
		}
		live[s] = true
		at, ok := rotateAt[s]
		if !ok {
			// Measured from when the agent first holds it (not NotBefore, which is backdated), so a short
			// TTL is not rotated at once; an SVID restored from disk rotates at half its remaining life.
			frac := pct * (0.9 + 0.2*rand.Float64())
			at = Time(now, s.NotBefore, s.NotAfter, frac)
			rotateAt[s] = at
		}
		if !now.Before(at) {
			due = append(due, e)
			continue
		}
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	for s := range rotateAt {
		if !live[s] {
			delete(rotateAt, s)
		}
	}
	return due, next
}

// signEntries makes a key per entry and asks the server to sign the CSRs in batches.
func (m *Manager) signEntries(ctx context.Context, client Signer, entries []cache.Entry, signedRev map[string]int64) error {
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(signParallelism)
	for batch := range slices.Chunk(entries, signBatch) {
		g.Go(func() error {
			keys := make(map[string]*ecdsa.PrivateKey, len(batch))
			byID := make(map[string]cache.Entry, len(batch))
			req := &agentv1.SignX509SVIDsRequest{}
			for _, e := range batch {
				key, csr, err := ca.NewKeyAndCSR(e.SPIFFEID)
				if err != nil {
					return err
				}
				keys[e.ID], byID[e.ID] = key, e
				req.Requests = append(req.Requests, &agentv1.X509SVIDRequest{EntryId: e.ID, Csr: csr})
			}
			resp, err := client.SignX509SVIDs(gctx, req)
			if err != nil {
				return err
			}
			svids := make(map[string]*cache.SVID, len(batch))
			for _, r := range resp.GetResults() {
				e, ok := byID[r.GetEntryId()]
				if !ok {
					continue
				}
				if r.GetError() != "" {
					m.cfg.Logger.Warn("server refused an svid", "entry", r.GetEntryId(), "spiffe_id", e.SPIFFEID.String(), "error", r.GetError())
					continue
				}
				svid, err := cache.NewSVID(e.SPIFFEID, r.GetCertChain(), keys[e.ID])
				if err != nil {
					m.cfg.Logger.Warn("bad svid from server", "entry", r.GetEntryId(), "error", err)
					continue
				}
				svids[e.ID] = svid
			}
			m.cfg.Cache.SetSVIDs(svids)
			mu.Lock()
			for id := range svids {
				signedRev[id] = byID[id].Revision
			}
			mu.Unlock()
			return nil
		})
	}
	return g.Wait()
}
