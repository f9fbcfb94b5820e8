package adminapi

import (
	"context"
	"fmt"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/internal/server/apierr"
)

// PolicyAdmin answers the policy verbs: status, history, sync now, rollback and unpin.
type PolicyAdmin interface {
	PolicyStatus(ctx context.Context) (*adminv1.GetPolicyStatusResponse, error)
	PolicyHistory(ctx context.Context, limit int) ([]*adminv1.PolicyAttempt, error)
	SyncPolicy(ctx context.Context) (revision string, err error)
	// RollbackPolicy pins the revision revision names (a prefix of it will do) and returns it in full.
	RollbackPolicy(ctx context.Context, actor, revision string) (string, error)
	// UnpinPolicy ends a pin and returns the revision in force; unpinned is false when nothing was pinned.
	UnpinPolicy(ctx context.Context, actor string) (revision string, unpinned bool, err error)
}

func (s *Service) policy() (PolicyAdmin, error) {
	if s.cfg.Policy == nil {
		return nil, apierr.Invalid("this server has no policy management")
	}
	return s.cfg.Policy, nil
}

// GetPolicyStatus shows the active policy, the last attempt and each agent's enforced revision.
func (s *Service) GetPolicyStatus(ctx context.Context, _ *adminv1.GetPolicyStatusRequest) (*adminv1.GetPolicyStatusResponse, error) {
	p, err := s.policy()
	if err != nil {
		return nil, err
	}
	return p.PolicyStatus(ctx)
}

// ListPolicyHistory lists policy attempts, newest first.
func (s *Service) ListPolicyHistory(ctx context.Context, req *adminv1.ListPolicyHistoryRequest) (*adminv1.ListPolicyHistoryResponse, error) {
	p, err := s.policy()
	if err != nil {
		return nil, err
	}
	pg, err := newPager("ListPolicyHistory", fmt.Sprint(req.GetLimit()), req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	out, err := p.PolicyHistory(ctx, int(req.GetLimit()))
	if err != nil {
		return nil, err
	}
	// The newest limit attempts (50 by default), newest first: a short list read whole.
	resp := &adminv1.ListPolicyHistoryResponse{}
	resp.Attempts, resp.NextPageToken = pageIn(pg, out, func(i int, _ *adminv1.PolicyAttempt) []string { return position(i) },
		func(a *adminv1.PolicyAttempt) *adminv1.PolicyAttempt { return a })
	return resp, nil
}

// SyncPolicy fetches the policy repository now.
func (s *Service) SyncPolicy(ctx context.Context, _ *adminv1.SyncPolicyRequest) (*adminv1.SyncPolicyResponse, error) {
	p, err := s.policy()
	if err != nil {
		return nil, err
	}
	rev, err := p.SyncPolicy(ctx)
	if err != nil {
		return &adminv1.SyncPolicyResponse{Revision: rev, Error: err.Error()}, nil
	}
	return &adminv1.SyncPolicyResponse{Revision: rev}, nil
}

// RollbackPolicy pins an earlier good revision until the next sync or unpin.
func (s *Service) RollbackPolicy(ctx context.Context, req *adminv1.RollbackPolicyRequest) (*adminv1.RollbackPolicyResponse, error) {
	p, err := s.policy()
	if err != nil {
		return nil, err
	}
	if req.GetRevision() == "" {
		return nil, apierr.Invalid("give the revision to roll back to (see kith policy history)")
	}
	rev, err := p.RollbackPolicy(ctx, s.cfg.Actor(ctx), req.GetRevision())
	if err != nil {
		return nil, err
	}
	return &adminv1.RollbackPolicyResponse{Revision: rev}, nil
}

// UnpinPolicy ends a rollback: the repository's newest good revision is in force again.
func (s *Service) UnpinPolicy(ctx context.Context, _ *adminv1.UnpinPolicyRequest) (*adminv1.UnpinPolicyResponse, error) {
	p, err := s.policy()
	if err != nil {
		return nil, err
	}
	rev, _, err := p.UnpinPolicy(ctx, s.cfg.Actor(ctx))
	if err != nil {
		return nil, err
	}
	return &adminv1.UnpinPolicyResponse{Revision: rev}, nil
}
