// Package policy keeps the node agent's decision engine in step with the server: it applies the pushed
// authorization data (grants, modes, labels) and policy bundles (verified against the signing key pinned
// on first use), remembers what to persist, and reports the revision it enforces.
package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"google.golang.org/protobuf/proto"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/policybundle"
	"github.com/kithid/kith/internal/grantpb"
)

// Engine is the decision engine the data and policy go to.
type Engine interface {
	SetData(ctx context.Context, d authz.Data) error
	SetPolicy(ctx context.Context, revision string, modules map[string]string) error
}

var _ Engine = (*authz.Engine)(nil)

// Config builds an Applier.
type Config struct {
	Engine Engine // required
	// VerifyBundle unpacks a policy bundle in place of OPA signature verification; zero: OPA's, with the
	// pinned key.
	VerifyBundle func([]byte) (string, map[string]string, error)
	// OnChange is called after the data or policy changed (to save them); zero: nothing.
	OnChange func()
	Logger   *slog.Logger // zero: discard
}

// Saved is what the agent persists of the policy and data: the last AuthzData (protobuf), the last
// policy bundle, its revision, and the pinned signing key (PEM).
type Saved struct {
	Authz, Policy []byte
	Revision      string
	Key           []byte
}

// Applier applies what the server pushes to the engine; a bad policy bundle is refused and the current
// one stays.
type Applier struct {
	cfg Config

	mu        sync.Mutex
	authzRaw  []byte // last AuthzData (proto), persisted
	policyRaw []byte // last policy bundle, persisted
	policyRev string
	policyKey []byte // PEM key policy bundles must be signed with: the first one the server sent, persisted
}

// New makes an Applier.
func New(cfg Config) (*Applier, error) {
	if cfg.Engine == nil {
		return nil, errors.New("policy: engine is required")
	}
	if cfg.OnChange == nil {
		cfg.OnChange = func() {}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Applier{cfg: cfg}, nil
}

// ApplyAuthz replaces the engine's grants, modes and labels with what the server sent.
func (p *Applier) ApplyAuthz(ctx context.Context, pd *agentv1.AuthzData) error {
	d := authz.Data{Labels: map[string]map[string]string{}, Modes: map[string]authz.Mode{}}
	for _, pg := range pd.GetGrants() {
		d.Grants = append(d.Grants, grantpb.FromProto(pg))
	}
	for t, m := range pd.GetModes() {
		d.Modes[t] = authz.Mode(m)
	}
	for _, l := range pd.GetLabels() {
		d.Labels[l.GetSpiffeId()] = l.GetLabels()
	}
	if err := p.cfg.Engine.SetData(ctx, d); err != nil {
		return fmt.Errorf("apply authorization data: %w", err)
	}
	raw, err := proto.Marshal(pd)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.authzRaw = raw
	p.mu.Unlock()
	p.cfg.OnChange()
	return nil
}

// ApplyPolicy verifies and activates a policy bundle; a bad one is refused and the current one stays.
// The first signing key the server sends (over the mTLS sync stream) is pinned: later bundles must be
// signed with it.
func (p *Applier) ApplyPolicy(ctx context.Context, pb *agentv1.PolicyBundle) error {
	p.mu.Lock()
	key := p.policyKey
	p.mu.Unlock()
	if k := pb.GetPublicKey(); len(k) > 0 {
		if len(key) == 0 {
			key = k
		} else if !bytes.Equal(key, k) {
			return fmt.Errorf("policy bundle %s refused: signed with a key other than the pinned one (remove policy_key from the agent state to accept a new server key)", pb.GetRevision())
		}
	}
	rev, modules := authz.BuiltinRevision, map[string]string{}
	if len(pb.GetBundle()) > 0 {
		var err error
		if rev, modules, err = p.readBundle(pb.GetBundle(), key); err != nil {
			return fmt.Errorf("policy bundle %s refused: %w", pb.GetRevision(), err)
		}
		if rev != pb.GetRevision() {
			return fmt.Errorf("policy bundle refused: manifest revision %q does not match %q", rev, pb.GetRevision())
		}
	}
	if err := p.cfg.Engine.SetPolicy(ctx, rev, modules); err != nil {
		return fmt.Errorf("policy %s refused: %w", rev, err)
	}
	p.mu.Lock()
	p.policyRaw = pb.GetBundle()
	p.policyRev = pb.GetRevision()
	p.policyKey = key
	p.mu.Unlock()
	p.cfg.Logger.Info("policy activated", "revision", rev, "modules", len(modules))
	p.cfg.OnChange()
	return nil
}

// readBundle unpacks a policy bundle: Config.VerifyBundle when set, else OPA signature verification with
// the pinned key; without a pinned key (a server that does not sign) the bundle is read unverified.
func (p *Applier) readBundle(data, key []byte) (string, map[string]string, error) {
	if p.cfg.VerifyBundle != nil {
		return p.cfg.VerifyBundle(data)
	}
	if len(key) > 0 {
		return policybundle.ReadSigned(data, key)
	}
	return policybundle.Read(data)
}

// Revision is the policy revision the agent enforces ("" before the first bundle).
func (p *Applier) Revision() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.policyRev
}

// Key is the pinned policy signing key (PEM), nil before the server sent one.
func (p *Applier) Key() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.policyKey
}

// Saved is what to persist.
func (p *Applier) Saved() Saved {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Saved{Authz: p.authzRaw, Policy: p.policyRaw, Revision: p.policyRev, Key: p.policyKey}
}

// Restore pins the saved key and applies the saved policy and data; what does not apply is logged and
// left for the server to send again.
func (p *Applier) Restore(ctx context.Context, s Saved) {
	p.mu.Lock()
	p.policyKey = s.Key
	p.mu.Unlock()
	if len(s.Policy) > 0 {
		if err := p.ApplyPolicy(ctx, &agentv1.PolicyBundle{Revision: s.Revision, Bundle: s.Policy}); err != nil {
			p.cfg.Logger.Error("persisted policy refused", "error", err)
		}
	}
	if len(s.Authz) > 0 {
		var pd agentv1.AuthzData
		if err := proto.Unmarshal(s.Authz, &pd); err != nil {
			p.cfg.Logger.Error("persisted authorization data unreadable", "error", err)
		} else if err := p.ApplyAuthz(ctx, &pd); err != nil {
			p.cfg.Logger.Error("persisted authorization data refused", "error", err)
		}
	}
}
