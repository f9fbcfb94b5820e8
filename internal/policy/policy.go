// Package policy is the server's authorization policy in one place: the custom policy in force (its
// revision and signed OPA bundle), the key that signs bundles, the policy source (a Git repository
// followed by authz/gitsync, or a directory checked the way `kith policy check` checks it), the identity
// labels the repository's data file supplies (kept in the store so that a restart applies them again),
// the decision engine that answers `kith can`, and the authorization data agents receive, built once per
// store revision and shared by every Sync stream.
package policy

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/gitsync"
	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/authz/policybundle"
	"github.com/kithid/kith/internal/config"
	"github.com/kithid/kith/internal/store"
)

// HistoryStore keeps the policy revisions the server built or refused.
type HistoryStore interface {
	RecordPolicy(ctx context.Context, actor string, p store.PolicyBundle, activate bool) error
	ActivatePolicy(ctx context.Context, actor, revision string, pinned bool) (store.PolicyBundle, error)
	UnpinPolicy(ctx context.Context, actor string) (store.PolicyBundle, bool, error)
	ActivePolicy(ctx context.Context) (store.PolicyBundle, error)
}

// HistoryReader lists policy attempts and what agents report they enforce.
type HistoryReader interface {
	PolicyHistory(ctx context.Context, limit int) ([]store.PolicyBundle, error)
	AgentPolicies(ctx context.Context) ([]store.AgentPolicy, error)
}

// LabelStore keeps the identity labels the policy repository supplies.
type LabelStore interface {
	SetPolicyLabels(ctx context.Context, labels map[string]map[string]string) error
	PolicyLabels(ctx context.Context) (map[string]map[string]string, error)
}

// GrantSync replaces the grants that come from the policy repository.
type GrantSync interface {
	ReplaceGrantsFromSource(ctx context.Context, actor, prefix, source string, grants []grant.Grant) error
}

// Revisions gives the store-wide revision.
type Revisions interface {
	Revision(ctx context.Context) (int64, error)
}

// Store is everything the policy keeps in and reads from the store.
type Store interface {
	DataStore
	Revisions
	HistoryStore
	HistoryReader
	LabelStore
	GrantSync
}

// SigningKeyFile is the name, in the data dir, of the key that signs policy bundles.
const SigningKeyFile = "policy-signing-key.pem"

// Config builds a Policy.
type Config struct {
	Store   Store  // required
	DataDir string // holds the bundle signing key (required)
	// Source is where custom policy comes from. Zero: only the policy already in the store, if any.
	Source config.Policy
	// TrustDomain is the server's: a commit whose data file grants to or from another is rejected. Zero:
	// not checked.
	TrustDomain spiffeid.TrustDomain
	// Engine configures the decision engine that answers `kith can`; its Decision also applies to the
	// checks of a policy directory.
	Engine authz.Config
	// Registerer receives the policy metrics. Zero: not registered.
	Registerer prometheus.Registerer
	Logger     *slog.Logger // zero: discard
}

// active is the custom policy in force: its revision and the bundle agents receive.
type active struct {
	revision string
	bundle   []byte
}

// Policy is the server's policy. It is safe for concurrent use.
type Policy struct {
	cfg      Config
	log      *slog.Logger
	engine   *authz.Engine
	admin    *authz.AdminEngine // decides admin calls over mTLS (package kith.admin)
	signer   *ecdsa.PrivateKey
	pubKey   []byte          // PEM of signer's public key
	syncer   *gitsync.Syncer // nil without a policy repository
	replays  *gitsync.Replays
	rejected prometheus.Counter
	active   atomic.Pointer[active]

	labelsMu sync.Mutex // serialises label changes with their generation
	labels   atomic.Pointer[map[string]map[string]string]
	labelGen atomic.Uint64 // bumped on every label change, so snapshots are rebuilt

	snapMu sync.Mutex // one snapshot build at a time
	snap   atomic.Pointer[Snapshot]

	engineMu   sync.Mutex
	engineSnap *Snapshot // the snapshot whose data the engine holds; nil: none
}

// New loads (or makes) the signing key, restores the policy and labels in force from the store, and
// applies the policy directory, if configured, after checking it.
func New(ctx context.Context, cfg Config) (*Policy, error) {
	if cfg.Store == nil || cfg.DataDir == "" {
		return nil, errors.New("policy: store and data dir are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	e, err := authz.New(cfg.Engine)
	if err != nil {
		return nil, fmt.Errorf("authz engine: %w", err)
	}
	key, err := LoadSigningKey(filepath.Join(cfg.DataDir, SigningKeyFile))
	if err != nil {
		return nil, err
	}
	pub, err := policybundle.MarshalPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	admin, err := authz.NewAdmin()
	if err != nil {
		return nil, fmt.Errorf("admin policy: %w", err)
	}
	p := &Policy{cfg: cfg, log: cfg.Logger, engine: e, admin: admin, signer: key, pubKey: pub,
		rejected: prometheus.NewCounter(prometheus.CounterOpts{Name: "kith_policy_rejected_total", Help: "Policy commits rejected (fetch, compile, test or validation errors)."}),
		replays:  gitsync.NewReplays(gitsync.DefaultReplayWindow, cfg.Engine.Now),
	}
	p.active.Store(&active{})
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(p.rejected)
	}
	labels, err := cfg.Store.PolicyLabels(ctx)
	if err != nil {
		return nil, err
	}
	p.labels.Store(&labels)

	last := ""
	if a, err := cfg.Store.ActivePolicy(ctx); err == nil {
		if err := p.setPolicy(ctx, a.Revision, a.Modules); err != nil {
			p.log.Error("stored policy no longer validates; the built-in policy is in force", "revision", a.Revision, "error", err)
		} else {
			last = a.Revision
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	// Earlier versions kept a checkout of the policy repository here; commits are now read from memory.
	if err := os.RemoveAll(filepath.Join(cfg.DataDir, "policy-git")); err != nil {
		p.log.Warn("remove the old policy checkout", "error", err)
	}
	if g := cfg.Source.Git; g.URL != "" {
		p.syncer, err = gitsync.New(gitsync.Config{
			URL: g.URL, Ref: g.Ref, Path: g.Path, PollInterval: g.PollInterval.D(), Timeout: g.Timeout.D(), Token: g.Token, SSHKeyFile: g.SSHKeyFile,
			Apply: p.apply, Reject: p.reject, Last: last,
			Limits: gitsync.Limits{MaxFileBytes: g.MaxFileBytes, MaxDataBytes: g.MaxDataBytes, MaxFiles: int(g.MaxFiles), MaxTotalBytes: g.MaxTotalBytes, MaxFetchBytes: g.MaxFetchBytes},
			Logger: p.log,
		})
		if err != nil {
			return nil, err
		}
	}
	if dir := cfg.Source.Dir; dir != "" {
		if err := p.loadDir(ctx, dir); err != nil {
			return nil, fmt.Errorf("policy.dir %s: %w", dir, err)
		}
	}
	return p, nil
}

// loadDir checks a policy directory as `kith policy check` does (compile, run its tests, read its data
// file, evaluate sample requests) and puts its modules in force. The revision is "dir:" and a digest of
// every .rego file, tests included.
func (p *Policy) loadDir(ctx context.Context, dir string) error {
	engineCfg := p.cfg.Engine
	engineCfg.Logger = nil // the check's engine is thrown away: its log is not the server's
	pol, err := gitsync.Check(ctx, dir, engineCfg)
	if err != nil {
		return err
	}
	files := maps.Clone(pol.Modules)
	maps.Copy(files, pol.Tests)
	h := sha256.New()
	for _, name := range slices.Sorted(maps.Keys(files)) {
		h.Write([]byte(name))
		h.Write([]byte(files[name]))
	}
	rev := "dir:" + hex.EncodeToString(h.Sum(nil))[:12]
	if err := p.setPolicy(ctx, rev, pol.Modules); err != nil {
		return err
	}
	p.log.Info("custom policy loaded", "dir", dir, "revision", rev, "modules", len(pol.Modules))
	return nil
}

// setPolicy validates modules with the engine (compile + sample inputs) and, only if they pass, makes
// them the active policy that agents receive, in a bundle signed with the server's key.
func (p *Policy) setPolicy(ctx context.Context, revision string, modules map[string]string) error {
	if err := p.admin.SetPolicy(ctx, modules); err != nil {
		return fmt.Errorf("policy revision %s: %w", revision, err)
	}
	if err := p.engine.SetPolicy(ctx, revision, modules); err != nil {
		return err
	}
	b, err := policybundle.BuildSigned(revision, modules, p.signer)
	if err != nil {
		return err
	}
	p.active.Store(&active{revision: revision, bundle: b})
	return nil
}

// setLabels makes labels the repository's identity labels, in the store and in force.
func (p *Policy) setLabels(ctx context.Context, labels map[string]map[string]string) error {
	if labels == nil {
		labels = map[string]map[string]string{}
	}
	if err := p.cfg.Store.SetPolicyLabels(ctx, labels); err != nil {
		return fmt.Errorf("store policy labels: %w", err)
	}
	p.labelsMu.Lock()
	p.labels.Store(&labels)
	p.labelGen.Add(1)
	p.labelsMu.Unlock()
	return nil
}

// apply validates a commit with the server's engine and, if it passes, makes it the active policy.
func (p *Policy) apply(ctx context.Context, c gitsync.Commit) error {
	start := time.Now()
	if !p.cfg.TrustDomain.IsZero() {
		if err := c.Policy.CheckTrustDomain(p.cfg.TrustDomain); err != nil {
			return err
		}
	}
	if err := p.setPolicy(ctx, c.SHA, c.Policy.Modules); err != nil {
		return err
	}
	built := time.Now()
	for _, w := range c.Policy.Warnings() {
		p.log.Warn("policy commit: "+w, "commit", c.SHA, "path", p.cfg.Source.Git.Path)
	}
	grants := make([]grant.Grant, len(c.Policy.Grants))
	for i, g := range c.Policy.Grants {
		g.Source, g.CreatedBy = "git:"+c.SHA, "git"
		grants[i] = g
	}
	if err := p.cfg.Store.ReplaceGrantsFromSource(ctx, "git", "git:", "git:"+c.SHA, grants); err != nil {
		return fmt.Errorf("store grants: %w", err)
	}
	if err := p.setLabels(ctx, c.Policy.Labels); err != nil {
		return err
	}
	_, bundle := p.Policy()
	if err := p.cfg.Store.RecordPolicy(ctx, "git", store.PolicyBundle{Revision: c.SHA, Status: store.PolicyOK, Bundle: bundle, Modules: c.Policy.Modules}, true); err != nil {
		return err
	}
	p.log.Info("policy bundle built", "commit", c.SHA, "bytes", len(bundle), "compile_sign", built.Sub(start), "store", time.Since(built))
	return nil
}

// reject records a failed commit; the active policy stays.
func (p *Policy) reject(ctx context.Context, sha string, err error) {
	p.rejected.Inc()
	p.log.Error("policy commit rejected; the last good policy stays", "commit", sha, "error", err)
	if rerr := p.cfg.Store.RecordPolicy(ctx, "git", store.PolicyBundle{Revision: sha, Status: store.PolicyRejected, Error: err.Error()}, false); rerr != nil {
		p.log.Error("record rejected policy", "error", rerr)
	}
}

// Run follows the policy repository until ctx is done.
func (p *Policy) Run(ctx context.Context) error {
	if p.syncer == nil {
		<-ctx.Done()
		return nil
	}
	return p.syncer.Run(ctx)
}

// Policy returns the active custom policy revision and its signed bundle (empty revision: none).
func (p *Policy) Policy() (revision string, bundle []byte) {
	a := p.active.Load()
	return a.revision, a.bundle
}

// PolicyKey is the PEM public key agents verify policy bundles with.
func (p *Policy) PolicyKey() []byte { return p.pubKey }

// Snapshot returns the authorization data at the store's current revision (or a later one). When the
// revision or the repository's labels moved since the last snapshot, it builds the next one from the last
// and what changed in between (every grant again when many changed).
func (p *Policy) Snapshot(ctx context.Context) (*Snapshot, error) {
	rev, err := p.cfg.Store.Revision(ctx)
	if err != nil {
		return nil, err
	}
	gen := p.labelGen.Load()
	if s := p.snap.Load(); s != nil && rev <= s.revision && gen == s.labelGen {
		return s, nil
	}
	p.snapMu.Lock()
	defer p.snapMu.Unlock()
	if s := p.snap.Load(); s != nil && rev <= s.revision && gen == s.labelGen {
		return s, nil // built by another caller meanwhile
	}
	p.labelsMu.Lock()
	labels, gen := *p.labels.Load(), p.labelGen.Load()
	p.labelsMu.Unlock()
	var s *Snapshot
	if prev := p.snap.Load(); prev != nil {
		s, err = next(ctx, p.cfg.Store, p.cfg.TrustDomain.Name(), prev, rev, gen, labels)
	} else {
		s, err = readSnapshot(ctx, p.cfg.Store, p.cfg.TrustDomain.Name(), rev, gen, labels)
	}
	if err != nil {
		return nil, fmt.Errorf("read authorization data: %w", err)
	}
	p.snap.Store(s)
	return s, nil
}

// Decide evaluates a request with the data at the store's current revision, for `kith can`.
func (p *Policy) Decide(ctx context.Context, in authz.Input) (authz.Decision, error) {
	if _, err := p.Snapshot(ctx); err != nil {
		return authz.Decision{}, err
	}
	if err := p.loadEngine(ctx); err != nil {
		return authz.Decision{}, err
	}
	return p.engine.Decide(ctx, in)
}

// DecideAdmin authorizes an admin call over mTLS with the kith.admin policy (built in, extended by the
// policy in force).
func (p *Policy) DecideAdmin(ctx context.Context, in authz.AdminInput) (authz.AdminDecision, error) {
	return p.admin.Decide(ctx, in)
}

// loadEngine puts the newest snapshot's data in the engine unless it holds it already. Snapshots are
// built one at a time, each from data read after the last one's, so the engine never goes back.
func (p *Policy) loadEngine(ctx context.Context) error {
	p.engineMu.Lock()
	defer p.engineMu.Unlock()
	s := p.snap.Load()
	if s == p.engineSnap {
		return nil
	}
	if err := p.engine.SetData(ctx, s.Data()); err != nil {
		return fmt.Errorf("load authorization data: %w", err)
	}
	p.engineSnap = s
	return nil
}
