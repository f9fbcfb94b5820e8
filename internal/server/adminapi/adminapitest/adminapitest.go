// Package adminapitest has fakes for testing the admin API and its callers: a store that wraps a real one
// and fails the calls it is told to, and a policy administrator.
package adminapitest

import (
	"context"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/internal/server/adminapi"
	"github.com/kithid/kith/internal/store"
)

// Store is a store.Backend that passes every call to the one it wraps, except those told to fail.
type Store struct {
	store.Backend

	mu   sync.Mutex
	fail map[string]error
}

var (
	_ adminapi.EntryStore = (*Store)(nil)
	_ adminapi.TokenStore = (*Store)(nil)
	_ adminapi.AgentStore = (*Store)(nil)
	_ adminapi.AuditLog   = (*Store)(nil)
	_ adminapi.GrantStore = (*Store)(nil)
)

// NewStore wraps b.
func NewStore(b store.Backend) *Store { return &Store{Backend: b, fail: map[string]error{}} }

// Fail makes every later call of the named method (e.g. "ListGrants") return err without reaching the
// wrapped store; a nil err lets it through again.
func (s *Store) Fail(method string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		delete(s.fail, method)
		return
	}
	s.fail[method] = err
}

func (s *Store) err(method string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fail[method]
}

func (s *Store) CreateEntry(ctx context.Context, actor string, e store.Entry) (store.Entry, error) {
	if err := s.err("CreateEntry"); err != nil {
		return store.Entry{}, err
	}
	return s.Backend.CreateEntry(ctx, actor, e)
}

func (s *Store) CreateEntries(ctx context.Context, actor string, es []store.Entry) ([]store.Entry, error) {
	if err := s.err("CreateEntries"); err != nil {
		return nil, err
	}
	return s.Backend.CreateEntries(ctx, actor, es)
}

func (s *Store) UpdateEntry(ctx context.Context, actor string, e store.Entry) (store.Entry, error) {
	if err := s.err("UpdateEntry"); err != nil {
		return store.Entry{}, err
	}
	return s.Backend.UpdateEntry(ctx, actor, e)
}

func (s *Store) DeleteEntry(ctx context.Context, actor string, id string) (store.Entry, error) {
	if err := s.err("DeleteEntry"); err != nil {
		return store.Entry{}, err
	}
	return s.Backend.DeleteEntry(ctx, actor, id)
}

func (s *Store) GetEntry(ctx context.Context, id string) (store.Entry, error) {
	if err := s.err("GetEntry"); err != nil {
		return store.Entry{}, err
	}
	return s.Backend.GetEntry(ctx, id)
}

func (s *Store) ListEntries(ctx context.Context, f store.EntryFilter) ([]store.Entry, error) {
	if err := s.err("ListEntries"); err != nil {
		return nil, err
	}
	return s.Backend.ListEntries(ctx, f)
}

func (s *Store) CreateJoinToken(ctx context.Context, actor string, t store.JoinToken) (store.JoinToken, error) {
	if err := s.err("CreateJoinToken"); err != nil {
		return store.JoinToken{}, err
	}
	return s.Backend.CreateJoinToken(ctx, actor, t)
}

func (s *Store) ListJoinTokens(ctx context.Context) ([]store.JoinToken, error) {
	if err := s.err("ListJoinTokens"); err != nil {
		return nil, err
	}
	return s.Backend.ListJoinTokens(ctx)
}

func (s *Store) RevokeJoinToken(ctx context.Context, actor, id string) (store.JoinToken, error) {
	if err := s.err("RevokeJoinToken"); err != nil {
		return store.JoinToken{}, err
	}
	return s.Backend.RevokeJoinToken(ctx, actor, id)
}

func (s *Store) BanAgent(ctx context.Context, actor string, id spiffeid.ID) (store.Agent, error) {
	if err := s.err("BanAgent"); err != nil {
		return store.Agent{}, err
	}
	return s.Backend.BanAgent(ctx, actor, id)
}

func (s *Store) UnbanAgent(ctx context.Context, actor string, id spiffeid.ID) (store.Agent, error) {
	if err := s.err("UnbanAgent"); err != nil {
		return store.Agent{}, err
	}
	return s.Backend.UnbanAgent(ctx, actor, id)
}

func (s *Store) ListAgents(ctx context.Context) ([]store.Agent, error) {
	if err := s.err("ListAgents"); err != nil {
		return nil, err
	}
	return s.Backend.ListAgents(ctx)
}

func (s *Store) GetAgent(ctx context.Context, id spiffeid.ID) (store.Agent, error) {
	if err := s.err("GetAgent"); err != nil {
		return store.Agent{}, err
	}
	return s.Backend.GetAgent(ctx, id)
}

func (s *Store) EvictAgent(ctx context.Context, actor string, id spiffeid.ID) (store.Agent, error) {
	if err := s.err("EvictAgent"); err != nil {
		return store.Agent{}, err
	}
	return s.Backend.EvictAgent(ctx, actor, id)
}

func (s *Store) ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditEvent, error) {
	if err := s.err("ListAudit"); err != nil {
		return nil, err
	}
	return s.Backend.ListAudit(ctx, f)
}

func (s *Store) VerifyAudit(ctx context.Context) (store.AuditVerification, error) {
	if err := s.err("VerifyAudit"); err != nil {
		return store.AuditVerification{}, err
	}
	return s.Backend.VerifyAudit(ctx)
}

func (s *Store) Revision(ctx context.Context) (int64, error) {
	if err := s.err("Revision"); err != nil {
		return 0, err
	}
	return s.Backend.Revision(ctx)
}

func (s *Store) CreateGrant(ctx context.Context, actor string, g grant.Grant) (grant.Grant, error) {
	if err := s.err("CreateGrant"); err != nil {
		return grant.Grant{}, err
	}
	return s.Backend.CreateGrant(ctx, actor, g)
}

func (s *Store) DeleteGrant(ctx context.Context, actor, id string) (grant.Grant, error) {
	if err := s.err("DeleteGrant"); err != nil {
		return grant.Grant{}, err
	}
	return s.Backend.DeleteGrant(ctx, actor, id)
}

func (s *Store) GetGrant(ctx context.Context, id string) (grant.Grant, error) {
	if err := s.err("GetGrant"); err != nil {
		return grant.Grant{}, err
	}
	return s.Backend.GetGrant(ctx, id)
}

func (s *Store) ListGrants(ctx context.Context, f store.GrantFilter) ([]grant.Grant, error) {
	if err := s.err("ListGrants"); err != nil {
		return nil, err
	}
	return s.Backend.ListGrants(ctx, f)
}

func (s *Store) SetTargetMode(ctx context.Context, actor, target string, mode grant.Mode) error {
	if err := s.err("SetTargetMode"); err != nil {
		return err
	}
	return s.Backend.SetTargetMode(ctx, actor, target, mode)
}

func (s *Store) TargetModes(ctx context.Context) (map[string]grant.Mode, error) {
	if err := s.err("TargetModes"); err != nil {
		return nil, err
	}
	return s.Backend.TargetModes(ctx)
}

// Policy is a PolicyAdmin that answers from its fields and records rollbacks.
type Policy struct {
	Err error // returned by every call when set

	mu         sync.Mutex
	rolledBack []string
}

var _ adminapi.PolicyAdmin = (*Policy)(nil)

func (p *Policy) PolicyStatus(context.Context) (*adminv1.GetPolicyStatusResponse, error) {
	if p.Err != nil {
		return nil, p.Err
	}
	return &adminv1.GetPolicyStatusResponse{}, nil
}

func (p *Policy) PolicyHistory(context.Context, int) ([]*adminv1.PolicyAttempt, error) {
	return nil, p.Err
}

func (p *Policy) SyncPolicy(context.Context) (string, error) { return "", p.Err }

func (p *Policy) RollbackPolicy(_ context.Context, _, revision string) (string, error) {
	if p.Err != nil {
		return "", p.Err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rolledBack = append(p.rolledBack, revision)
	return revision, nil
}

func (p *Policy) UnpinPolicy(context.Context, string) (string, bool, error) { return "", false, p.Err }

// RolledBack returns the revisions rolled back to, in order.
func (p *Policy) RolledBack() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.rolledBack...)
}

func (s *Store) Audit(ctx context.Context, actor, action, target string, detail any) error {
	if err := s.err("Audit"); err != nil {
		return err
	}
	return s.Backend.Audit(ctx, actor, action, target, detail)
}
