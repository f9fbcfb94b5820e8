package agentapi

import (
	"context"
	"fmt"
	"maps"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/internal/policy"
	"github.com/kithid/kith/internal/store"
)

// AuthzSource gives the authorization data agents enforce with (grants, target modes and labels) at the
// store's current revision, built once per revision and shared by every stream.
type AuthzSource interface {
	Snapshot(ctx context.Context) (*policy.Snapshot, error)
}

// PolicySource gives the active policy bundle (empty revision: none).
type PolicySource interface {
	Policy() (revision string, bundle []byte)
}

// PolicyKeySource is implemented by a PolicySource whose bundles are signed: the PEM public key agents
// verify them with.
type PolicyKeySource interface {
	PolicyKey() []byte
}

// PolicyReports records the policy revision each agent reports it enforces.
type PolicyReports interface {
	SetAgentPolicy(ctx context.Context, agentID, revision, errText string) error
}

// ReportStatus records the policy revision the calling agent enforces.
func (s *Service) ReportStatus(ctx context.Context, req *agentv1.ReportStatusRequest) (*agentv1.ReportStatusResponse, error) {
	a, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetActivity() {
		if err := checkActivity(req); err != nil {
			return nil, err
		}
	}
	if r := req.GetAuthzRevision(); r > 0 {
		s.acknowledge(a.ID, r)
	}
	resp := &agentv1.ReportStatusResponse{}
	if req.GetActivity() {
		applied, err := s.recordActivity(a.ID, req)
		if err != nil {
			return nil, err
		}
		resp.ActivityDeltas, resp.FullActivityWanted = applied, !applied
	}
	if s.cfg.Reports != nil {
		if err := s.cfg.Reports.SetAgentPolicy(ctx, a.ID.String(), req.GetPolicyRevision(), req.GetPolicyError()); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

// authzRelevant reports whether changes may alter an agent's authorization data.
func authzRelevant(changes []store.Change) bool {
	for _, c := range changes {
		switch c.Kind {
		case store.KindGrant, store.KindMode, store.KindEntry, store.KindUser: // a user's labels and disabled flag
			return true
		}
	}
	return false
}

// addAuthz sets msg.Authz when the agent's authorization data differs from what it was last sent: the
// grants whose target this agent serves (an ID it serves or a prefix "…/*" of one), the modes of those
// targets, and identity labels.
func (sy *syncer) addAuthz(ctx context.Context, msg *agentv1.SyncResponse) error {
	if sy.s.cfg.Authz == nil {
		return nil
	}
	snap, err := sy.s.cfg.Authz.Snapshot(ctx)
	if err != nil {
		return fmt.Errorf("sync agent %s: authorization data: %w", sy.agent.ID, err)
	}
	share := snap.For(maps.Values(sy.sent))
	sum := share.Sum()
	if sy.authzSent && sum == sy.authzSum {
		return nil
	}
	sy.authzSum, sy.authzSent = sum, true
	msg.Authz = share.Message()
	return nil
}

// addPolicy sets msg.Policy when the active policy revision differs from the one last sent.
func (sy *syncer) addPolicy(msg *agentv1.SyncResponse) {
	if sy.s.cfg.Policy == nil {
		return
	}
	rev, bundle := sy.s.cfg.Policy.Policy()
	if rev == sy.policyRev {
		return
	}
	sy.policyRev = rev
	msg.Policy = &agentv1.PolicyBundle{Revision: rev, Bundle: bundle}
	if ks, ok := sy.s.cfg.Policy.(PolicyKeySource); ok {
		msg.Policy.PublicKey = ks.PolicyKey()
	}
}

// policyChanged reports whether changes include a policy change.
func policyChanged(changes []store.Change) bool {
	for _, c := range changes {
		if c.Kind == store.KindPolicy {
			return true
		}
	}
	return false
}
