package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/gitsync"
	"github.com/kithid/kith/internal/config"
	"github.com/kithid/kith/internal/store"
)

// policyStore is what the policy manager keeps in the store.
type policyStore interface {
	RecordPolicy(ctx context.Context, actor string, p store.PolicyBundle, activate bool) error
	ActivatePolicy(ctx context.Context, actor, revision string, pinned bool) (store.PolicyBundle, error)
	ActivePolicy(ctx context.Context) (store.PolicyBundle, error)
	PolicyHistory(ctx context.Context, limit int) ([]store.PolicyBundle, error)
	AgentPolicies(ctx context.Context) ([]store.AgentPolicy, error)
	ReplaceGrantsFromSource(ctx context.Context, actor, prefix string, grants []authz.Grant) error
}

// policyManager builds signed policy bundles from a Git repository (or policy.dir), keeps their history
// and answers the policy admin verbs.
type policyManager struct {
	view     *authzView
	st       policyStore
	log      *slog.Logger
	cfg      config.Policy
	syncer   *gitsync.Syncer // nil without policy.git
	rejected prometheus.Counter
}

// loadSigningKey reads the policy bundle signing key (P-256, PKCS#8 PEM, 0600) or makes one.
func loadSigningKey(path string) (*ecdsa.PrivateKey, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, fmt.Errorf("write policy signing key: %w", err)
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read policy signing key: %w", err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, fmt.Errorf("policy signing key %s: no PEM block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("policy signing key %s: %w", path, err)
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("policy signing key %s: not an ECDSA key", path)
	}
	return ec, nil
}

func newPolicyManager(ctx context.Context, c *config.Server, view *authzView, st policyStore, reg prometheus.Registerer, log *slog.Logger) (*policyManager, error) {
	key, err := loadSigningKey(filepath.Join(c.DataDir, "policy-signing-key.pem"))
	if err != nil {
		return nil, err
	}
	if err := view.setSigner(key); err != nil {
		return nil, err
	}
	m := &policyManager{view: view, st: st, log: log, cfg: c.Policy,
		rejected: prometheus.NewCounter(prometheus.CounterOpts{Name: "kith_policy_rejected_total", Help: "Policy commits rejected (fetch, compile, test or validation errors)."}),
	}
	reg.MustRegister(m.rejected)
	last := ""
	if active, err := st.ActivePolicy(ctx); err == nil {
		if err := view.setPolicy(ctx, active.Revision, active.Modules); err != nil {
			log.Error("stored policy no longer validates; the built-in policy is in force", "revision", active.Revision, "error", err)
		} else {
			last = active.Revision
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	// Earlier versions kept a checkout of the policy repository here; commits are now read from memory.
	if err := os.RemoveAll(filepath.Join(c.DataDir, "policy-git")); err != nil {
		log.Warn("remove the old policy checkout", "error", err)
	}
	if g := c.Policy.Git; g.URL != "" {
		m.syncer, err = gitsync.New(gitsync.Config{
			URL: g.URL, Ref: g.Ref, Path: g.Path, PollInterval: g.PollInterval.D(), Token: g.Token, SSHKeyFile: g.SSHKeyFile,
			Apply: m.apply, Reject: m.reject, Last: last,
			Logger: log,
		})
		if err != nil {
			return nil, err
		}
	}
	return m, nil
}

// apply validates a commit with the server's engine and, if it passes, makes it the active policy.
func (m *policyManager) apply(ctx context.Context, c gitsync.Commit) error {
	start := time.Now()
	if err := m.view.setPolicy(ctx, c.SHA, c.Policy.Modules); err != nil {
		return err
	}
	built := time.Now()
	grants := make([]authz.Grant, len(c.Policy.Grants))
	for i, g := range c.Policy.Grants {
		g.Source, g.CreatedBy = "git:"+c.SHA, "git"
		grants[i] = g
	}
	if err := m.st.ReplaceGrantsFromSource(ctx, "git", "git:", grants); err != nil {
		return fmt.Errorf("store grants: %w", err)
	}
	m.view.setGitLabels(c.Policy.Labels)
	_, bundle := m.view.Policy()
	if err := m.st.RecordPolicy(ctx, "git", store.PolicyBundle{Revision: c.SHA, Status: store.PolicyOK, Bundle: bundle, Modules: c.Policy.Modules}, true); err != nil {
		return err
	}
	m.log.Info("policy bundle built", "commit", c.SHA, "bytes", len(bundle), "compile_sign", built.Sub(start), "store", time.Since(built))
	return nil
}

// reject records a failed commit; the active policy stays.
func (m *policyManager) reject(ctx context.Context, sha string, err error) {
	m.rejected.Inc()
	m.log.Error("policy commit rejected; the last good policy stays", "commit", sha, "error", err)
	if rerr := m.st.RecordPolicy(ctx, "git", store.PolicyBundle{Revision: sha, Status: store.PolicyRejected, Error: err.Error()}, false); rerr != nil {
		m.log.Error("record rejected policy", "error", rerr)
	}
}

// Run follows the repository until ctx is done.
func (m *policyManager) Run(ctx context.Context) error {
	if m.syncer == nil {
		<-ctx.Done()
		return nil
	}
	return m.syncer.Run(ctx)
}

func attemptProto(p store.PolicyBundle) *adminv1.PolicyAttempt {
	return &adminv1.PolicyAttempt{Revision: p.Revision, CreatedAt: timestamppb.New(p.CreatedAt), Status: p.Status, Error: p.Error}
}

func (m *policyManager) PolicyStatus(ctx context.Context) (*adminv1.GetPolicyStatusResponse, error) {
	rev, _ := m.view.Policy()
	if rev == "" {
		rev = authz.BuiltinRevision
	}
	out := &adminv1.GetPolicyStatusResponse{ActiveRevision: rev}
	switch {
	case m.cfg.Git.URL != "":
		out.Source = m.cfg.Git.URL + "@" + m.cfg.Git.Ref
	case m.cfg.Dir != "":
		out.Source = m.cfg.Dir
	}
	hist, err := m.st.PolicyHistory(ctx, 1)
	if err != nil {
		return nil, err
	}
	if len(hist) > 0 {
		out.LastAttempt = attemptProto(hist[0])
	}
	if active, err := m.st.ActivePolicy(ctx); err == nil && active.Pinned {
		out.PinnedRevision = active.Revision
	}
	agents, err := m.st.AgentPolicies(ctx)
	if err != nil {
		return nil, err
	}
	for _, a := range agents {
		out.Agents = append(out.Agents, &adminv1.AgentPolicy{AgentId: a.AgentID, Revision: a.Revision, Since: timestamppb.New(a.Since), Error: a.Error})
	}
	return out, nil
}

func (m *policyManager) PolicyHistory(ctx context.Context, limit int) ([]*adminv1.PolicyAttempt, error) {
	hist, err := m.st.PolicyHistory(ctx, limit)
	if err != nil {
		return nil, err
	}
	out := make([]*adminv1.PolicyAttempt, len(hist))
	for i, h := range hist {
		out[i] = attemptProto(h)
	}
	return out, nil
}

func (m *policyManager) SyncPolicy(ctx context.Context) (string, error) {
	if m.syncer == nil {
		return "", errors.New("no policy repository configured (policy.git.url)")
	}
	return m.syncer.Sync(ctx)
}

func (m *policyManager) RollbackPolicy(ctx context.Context, actor, revision string) error {
	return m.activate(ctx, actor, revision, true)
}

func (m *policyManager) activate(ctx context.Context, actor, revision string, pinned bool) error {
	hist, err := m.st.PolicyHistory(ctx, 1000)
	if err != nil {
		return err
	}
	for _, h := range hist {
		if h.Revision == revision && h.Status == store.PolicyOK {
			p, err := m.st.ActivatePolicy(ctx, actor, revision, pinned)
			if err != nil {
				return err
			}
			return m.view.setPolicy(ctx, p.Revision, p.Modules)
		}
	}
	return fmt.Errorf("policy revision %s: %w: roll back only to a revision listed ok by kith policy history", revision, store.ErrNotFound)
}

func (m *policyManager) UnpinPolicy(ctx context.Context, actor string) (string, error) {
	hist, err := m.st.PolicyHistory(ctx, 1000)
	if err != nil {
		return "", err
	}
	for _, h := range hist {
		if h.Status == store.PolicyOK {
			return h.Revision, m.activate(ctx, actor, h.Revision, false)
		}
	}
	return "", errors.New("no good policy revision to return to")
}

// serveWebhook triggers a sync when the request is signed with the webhook secret.
func (m *policyManager) serveWebhook(w http.ResponseWriter, r *http.Request) {
	if m.syncer == nil || m.cfg.Git.WebhookSecret == "" {
		http.Error(w, "policy webhook not configured (policy.git.webhook_secret)", http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 10<<20))
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	if !gitsync.VerifyWebhook(m.cfg.Git.WebhookSecret, r.Header, body) {
		m.log.Warn("policy webhook with a missing or wrong signature", "remote", r.RemoteAddr)
		http.Error(w, "missing or wrong webhook signature", http.StatusUnauthorized)
		return
	}
	m.syncer.Trigger()
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write([]byte("sync triggered\n"))
}
