package agentapi

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
)

// Two agents' reports are summed per caller for the identity asked about, SVIDs listed per agent; a newer
// report replaces an agent's previous one; other identities' rows are left out.
func TestIdentityActivitySumsAgentsReports(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	s := &Service{cfg: Config{Now: func() time.Time { return now }}}
	a1, a2 := spiffeid.RequireFromString("spiffe://td/kith/agent/a1"), spiffeid.RequireFromString("spiffe://td/kith/agent/a2")
	const pay, web, ops = "spiffe://td/payments", "spiffe://td/web", "spiffe://td/ops"
	exp := now.Add(time.Hour)
	s.recordActivity(a1, &agentv1.ReportStatusRequest{Activity: true,
		Svids:     []*agentv1.HeldSVID{{EntryId: "e1", SpiffeId: pay, SerialNumber: "01", ExpiresAt: timestamppb.New(exp)}, {EntryId: "e2", SpiffeId: web}},
		Decisions: []*agentv1.DecisionCount{{Caller: web, Target: pay, Allowed: 100}, {Caller: pay, Target: web, Allowed: 7}}})
	s.recordActivity(a2, &agentv1.ReportStatusRequest{Activity: true, Decisions: []*agentv1.DecisionCount{{Caller: web, Target: pay, Allowed: 1, Denied: 2}}})
	now = now.Add(time.Minute)
	s.recordActivity(a2, &agentv1.ReportStatusRequest{Activity: true,
		Svids:     []*agentv1.HeldSVID{{EntryId: "e1", SpiffeId: pay, SerialNumber: "02", ExpiresAt: timestamppb.New(exp)}},
		Decisions: []*agentv1.DecisionCount{{Caller: web, Target: pay, Allowed: 5, Denied: 1}, {Caller: ops, Target: pay, Denied: 200}}})

	got := s.IdentityActivity(pay)
	want := Activity{
		SVIDs:   []HeldSVID{{Agent: a1.String(), Entry: "e1", Serial: "01", ExpiresAt: exp}, {Agent: a2.String(), Entry: "e1", Serial: "02", ExpiresAt: exp}},
		Callers: []CallerDecisions{{Caller: ops, Denied: 200}, {Caller: web, Allowed: 105, Denied: 1}},
		Agents:  2, Oldest: now.Add(-time.Minute),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("IdentityActivity (-want +got):\n%s", diff)
	}
	if got := s.IdentityActivity("spiffe://td/nobody"); got.Agents != 0 || len(got.SVIDs)+len(got.Callers) != 0 {
		t.Errorf("IdentityActivity of an identity no agent mentions = %+v", got)
	}
}

func TestCheckActivityRefusesOversizedReports(t *testing.T) {
	long := "spiffe://td/" + strings.Repeat("x", maxReportedIDLength)
	for _, tc := range []struct {
		name string
		req  *agentv1.ReportStatusRequest
		want string // "" for accepted
	}{
		{"ordinary", &agentv1.ReportStatusRequest{Activity: true, Decisions: []*agentv1.DecisionCount{{Caller: "spiffe://td/a", Target: "spiffe://td/b"}}}, ""},
		{"too many decision rows", &agentv1.ReportStatusRequest{Activity: true, Decisions: make([]*agentv1.DecisionCount, maxReportedDecisions+1)}, "decision counts, at most"},
		{"too long a caller", &agentv1.ReportStatusRequest{Activity: true, Decisions: []*agentv1.DecisionCount{{Caller: long}}}, "too long"},
		{"too long an svid id", &agentv1.ReportStatusRequest{Activity: true, Svids: []*agentv1.HeldSVID{{SpiffeId: long}}}, "too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkActivity(tc.req)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("checkActivity = %v, want %q", err, tc.want)
			}
		})
	}
}

// A delta applies to the report it follows: SVIDs replaced, added and removed, counts replaced; one that
// follows another report is not applied (the agent is asked for everything); one that would grow past the
// bounds of a report is refused and the next must be whole.
func TestRecordActivityAppliesDeltas(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	s := &Service{cfg: Config{Now: func() time.Time { return now }}}
	agent := spiffeid.RequireFromString("spiffe://td/kith/agent/a1")
	const pay, web = "spiffe://td/payments", "spiffe://td/web"
	record := func(req *agentv1.ReportStatusRequest) (bool, error) {
		req.Activity = true
		if err := checkActivity(req); err != nil {
			return false, err
		}
		return s.recordActivity(agent, req)
	}
	if ok, err := record(&agentv1.ReportStatusRequest{ActivitySeq: 1,
		Svids:     []*agentv1.HeldSVID{{EntryId: "e1", SpiffeId: pay, SerialNumber: "01"}, {EntryId: "e2", SpiffeId: pay, SerialNumber: "02"}},
		Decisions: []*agentv1.DecisionCount{{Caller: web, Target: pay, Allowed: 1}}}); !ok || err != nil {
		t.Fatalf("whole report: %v, %v", ok, err)
	}
	if ok, err := record(&agentv1.ReportStatusRequest{ActivitySeq: 2, ActivityBaseSeq: 1,
		Svids:               []*agentv1.HeldSVID{{EntryId: "e1", SpiffeId: pay, SerialNumber: "11"}, {EntryId: "e3", SpiffeId: pay, SerialNumber: "03"}},
		RemovedSvidEntryIds: []string{"e2"},
		Decisions:           []*agentv1.DecisionCount{{Caller: web, Target: pay, Allowed: 4, Denied: 1}}}); !ok || err != nil {
		t.Fatalf("delta: %v, %v", ok, err)
	}
	want := Activity{
		SVIDs:   []HeldSVID{{Agent: agent.String(), Entry: "e1", Serial: "11", ExpiresAt: time.Unix(0, 0).UTC()}, {Agent: agent.String(), Entry: "e3", Serial: "03", ExpiresAt: time.Unix(0, 0).UTC()}},
		Callers: []CallerDecisions{{Caller: web, Allowed: 4, Denied: 1}},
		Agents:  1, Oldest: now,
	}
	if diff := cmp.Diff(want, s.IdentityActivity(pay)); diff != "" {
		t.Errorf("after the delta (-want +got):\n%s", diff)
	}
	if ok, err := record(&agentv1.ReportStatusRequest{ActivitySeq: 4, ActivityBaseSeq: 3, RemovedSvidEntryIds: []string{"e1"}}); ok || err != nil {
		t.Errorf("a delta after a report this server never saw: %v, %v; want it not applied", ok, err)
	}
	if diff := cmp.Diff(want, s.IdentityActivity(pay)); diff != "" {
		t.Errorf("a delta not applied changed the activity (-want +got):\n%s", diff)
	}
	if _, err := record(&agentv1.ReportStatusRequest{ActivitySeq: 3, ActivityBaseSeq: 3}); err == nil {
		t.Error("a delta numbered like its base was accepted")
	}
	many := make([]*agentv1.DecisionCount, maxReportedDecisions)
	for i := range many {
		many[i] = &agentv1.DecisionCount{Caller: fmt.Sprint("c", i), Target: pay}
	}
	if _, err := record(&agentv1.ReportStatusRequest{ActivitySeq: 3, ActivityBaseSeq: 2, Decisions: many}); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("a delta past the bounds: %v, want it refused", err)
	}
	if ok, _ := record(&agentv1.ReportStatusRequest{ActivitySeq: 4, ActivityBaseSeq: 2}); ok {
		t.Error("a delta was applied after a refused one; want a whole report asked for")
	}
}
