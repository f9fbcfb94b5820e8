package agentapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/internal/grantpb"
	"github.com/kithid/kith/internal/store"
)

// AuthzSource gives the authorization data agents enforce with: grants, target modes and labels.
type AuthzSource interface {
	Load(ctx context.Context) (authz.Data, error)
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
	if s.cfg.Reports != nil {
		if err := s.cfg.Reports.SetAgentPolicy(ctx, a.ID.String(), req.GetPolicyRevision(), req.GetPolicyError()); err != nil {
			return nil, err
		}
	}
	return &agentv1.ReportStatusResponse{}, nil
}

// authzRelevant reports whether changes may alter an agent's authorization data.
func authzRelevant(changes []store.Change) bool {
	for _, c := range changes {
		switch c.Kind {
		case store.KindGrant, store.KindMode, store.KindEntry:
			return true
		}
	}
	return false
}

// addAuthz sets msg.Authz when the agent's authorization data differs from what it was last sent: the
// grants whose target this agent serves, the modes of those targets, and identity labels.
func (sy *syncer) addAuthz(ctx context.Context, msg *agentv1.SyncResponse) error {
	if sy.s.cfg.Authz == nil {
		return nil
	}
	d, err := sy.s.cfg.Authz.Load(ctx)
	if err != nil {
		return fmt.Errorf("sync agent %s: authorization data: %w", sy.agent.ID, err)
	}
	served := make(map[string]bool, len(sy.sent))
	for _, id := range sy.sent {
		served[id] = true
	}
	relevant := func(target string) bool {
		if served[target] {
			return true
		}
		if strings.HasSuffix(target, "*") {
			for id := range served {
				if grant.Covers(target, id) {
					return true
				}
			}
		}
		return false
	}
	out := &agentv1.AuthzData{Modes: map[string]string{}}
	for _, g := range d.Grants {
		if relevant(g.Target) {
			out.Grants = append(out.Grants, grantpb.ToProto(g))
		}
	}
	for t, m := range d.Modes {
		if served[t] {
			out.Modes[t] = string(m)
		}
	}
	ids := make([]string, 0, len(d.Labels))
	for id := range d.Labels {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		out.Labels = append(out.Labels, &agentv1.IdentityLabels{SpiffeId: id, Labels: d.Labels[id]})
	}
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(out)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(raw)
	if sy.authzSent && bytes.Equal(sum[:], sy.authzSum[:]) {
		return nil
	}
	sy.authzSum, sy.authzSent = sum, true
	msg.Authz = out
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
