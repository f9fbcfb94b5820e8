package agent

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/testing/protocmp"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/authz/extauthz"
	"github.com/kithid/kith/svid/cache"
)

// Decisions are counted per caller for the targets the agent serves only, errors and audit-mode denials as
// denied, and callers past maxDecisionPairs fall into one "other" row per target.
func TestActivityCountsDecisionsPerCaller(t *testing.T) {
	c := cache.New()
	payments := spiffeid.RequireFromString("spiffe://example.org/payments")
	c.ReplaceEntries([]cache.Entry{{ID: "e1", SPIFFEID: payments}}, 1)
	m := newMetrics(c)
	a := newActivity(&m.served)
	const web = "spiffe://example.org/web"
	for _, outcome := range []string{extauthz.OutcomeAllow, extauthz.OutcomeAllow, extauthz.OutcomeDeny, extauthz.OutcomeAuditDeny, extauthz.OutcomeError} {
		a.decision(web, payments.String(), outcome)
	}
	a.decision("", payments.String(), extauthz.OutcomeDeny)
	a.decision(web, "spiffe://example.org/not-served", extauthz.OutcomeAllow)
	want := []*agentv1.DecisionCount{
		{Caller: "", Target: payments.String(), Denied: 1},
		{Caller: web, Target: payments.String(), Allowed: 2, Denied: 3},
	}
	if diff := cmp.Diff(want, a.decisions(), protocmp.Transform()); diff != "" {
		t.Errorf("decisions (-want +got):\n%s", diff)
	}

	for i := range maxDecisionPairs + 50 {
		a.decision(fmt.Sprintf("spiffe://example.org/caller/%d", i), payments.String(), extauthz.OutcomeDeny)
	}
	got := a.decisions()
	if len(got) != maxDecisionPairs+1 {
		t.Fatalf("%d pairs after %d callers, want %d and one overflow row", len(got), maxDecisionPairs+52, maxDecisionPairs)
	}
	var other *agentv1.DecisionCount
	for _, d := range got {
		if d.GetCaller() == otherCaller {
			other = d
		}
	}
	if other == nil || other.GetDenied() != 52 {
		t.Errorf("overflow row = %v, want the 52 callers past the limit counted as denied", other)
	}
}
