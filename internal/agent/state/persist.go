package state

import (
	"context"
	"log/slog"
	"time"
)

// PersisterConfig builds a Persister.
type PersisterConfig struct {
	// Save writes the state; required. Errors are logged, and the next change saves again.
	Save func() error
	// Changed returns a channel closed at the cache's next change; required.
	Changed func() <-chan struct{}
	// SVIDs is how many SVIDs the cache holds, to space out saves; zero: saves stay a second apart.
	SVIDs  func() int
	Logger *slog.Logger // zero: discard
}

// Persister saves the agent's state at most once a second after a change (longer with many SVIDs), and
// once more when its Run returns.
type Persister struct {
	cfg   PersisterConfig
	dirty chan struct{}
}

// NewPersister makes a Persister; Run starts it.
func NewPersister(cfg PersisterConfig) *Persister {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SVIDs == nil {
		cfg.SVIDs = func() int { return 0 }
	}
	return &Persister{cfg: cfg, dirty: make(chan struct{}, 1)}
}

// MarkDirty asks for a save: something the cache does not signal (the agent SVID, authorization data,
// policy) changed.
func (p *Persister) MarkDirty() {
	select {
	case p.dirty <- struct{}{}:
	default:
	}
}

// Run saves after changes until ctx is done, then saves once more.
func (p *Persister) Run(ctx context.Context) error {
	changed := p.cfg.Changed()
	for {
		select {
		case <-ctx.Done():
			p.save()
			return nil
		case <-p.dirty:
		case <-changed:
		}
		changed = p.cfg.Changed()
		p.save()
		// Saving re-encodes every SVID: with many, save less often (1 s, plus 1 s per 1,000 SVIDs, at most 10 s).
		t := time.NewTimer(min(time.Second+time.Duration(p.cfg.SVIDs()/1000)*time.Second, 10*time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
}

func (p *Persister) save() {
	if err := p.cfg.Save(); err != nil {
		p.cfg.Logger.Error("save agent state", "error", err)
	}
}
