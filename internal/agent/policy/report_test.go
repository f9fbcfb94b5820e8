package policy_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/ca/catest"
	"github.com/kithid/kith/internal/agent/agenttest"
	"github.com/kithid/kith/internal/agent/policy"
)

func TestReporterSendsTheEnforcedRevisionWhileConnected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &agenttest.Server{CA: catest.NewCA(t, spiffeid.RequireTrustDomainFromString("example.org"))}
		var connected atomic.Bool
		var rev atomic.Value
		rev.Store("")
		r, err := policy.NewReporter(policy.ReporterConfig{
			Revision: func() string { return rev.Load().(string) },
			Client: func() policy.StatusReporter {
				if !connected.Load() {
					return nil
				}
				return srv
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go r.Run(ctx)

		r.Report("dropped: not connected")
		synctest.Wait()
		connected.Store(true)
		r.Report("")
		synctest.Wait()
		rev.Store("abc123")
		r.Report("policy bundle def refused")
		synctest.Wait()
		want := []*agentv1.ReportStatusRequest{
			{PolicyRevision: "builtin"},
			{PolicyRevision: "abc123", PolicyError: "policy bundle def refused"},
		}
		if diff := cmp.Diff(want, srv.Reports(), protocmp.Transform()); diff != "" {
			t.Errorf("reports (-want +got):\n%s", diff)
		}
	})
}

// activityServer answers activity reports as the server does: it takes deltas (unless old), and asks for
// everything when a delta does not follow the last report it applied.
type activityServer struct {
	mu      sync.Mutex
	old     bool // a server from before deltas: it answers nothing about them
	lastSeq uint64
	reports []*agentv1.ReportStatusRequest
}

func (s *activityServer) ReportStatus(_ context.Context, req *agentv1.ReportStatusRequest, _ ...grpc.CallOption) (*agentv1.ReportStatusResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reports = append(s.reports, proto.Clone(req).(*agentv1.ReportStatusRequest))
	if s.old {
		return &agentv1.ReportStatusResponse{}, nil
	}
	if b := req.GetActivityBaseSeq(); b != 0 && b != s.lastSeq {
		return &agentv1.ReportStatusResponse{FullActivityWanted: true}, nil
	}
	s.lastSeq = req.GetActivitySeq()
	return &agentv1.ReportStatusResponse{ActivityDeltas: true}, nil
}

// take returns the reports received since the last take, as "seq/base: svids entry@serial -removed; decisions caller>target=allowed/denied".
func (s *activityServer) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, r := range s.reports {
		line := fmt.Sprintf("%d/%d:", r.GetActivitySeq(), r.GetActivityBaseSeq())
		for _, h := range r.GetSvids() {
			line += " " + h.GetEntryId() + "@" + h.GetSerialNumber()
		}
		for _, e := range r.GetRemovedSvidEntryIds() {
			line += " -" + e
		}
		line += ";"
		for _, d := range r.GetDecisions() {
			line += fmt.Sprintf(" %s>%s=%d/%d", d.GetCaller(), d.GetTarget(), d.GetAllowed(), d.GetDenied())
		}
		out = append(out, line)
	}
	s.reports = nil
	return out
}

// TestReporterSendsActivityDeltas: after a whole report the server applied, the agent sends only what
// changed (nothing when nothing did); a server that lacks the base gets everything again, as does a new
// connection and a server that takes no deltas (which is not sent the same report twice).
func TestReporterSendsActivityDeltas(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		svids := map[string]string{"e1": "01", "e2": "02"}
		allowed := uint64(1)
		activity := func() ([]*agentv1.HeldSVID, []*agentv1.DecisionCount) {
			mu.Lock()
			defer mu.Unlock()
			var hs []*agentv1.HeldSVID
			for _, e := range slices.Sorted(maps.Keys(svids)) {
				hs = append(hs, &agentv1.HeldSVID{EntryId: e, SerialNumber: svids[e]})
			}
			return hs, []*agentv1.DecisionCount{{Caller: "web", Target: "pay", Allowed: allowed}, {Caller: "ops", Target: "pay", Denied: 1}}
		}
		srv := &activityServer{}
		var client atomic.Pointer[activityServer]
		client.Store(srv)
		r, err := policy.NewReporter(policy.ReporterConfig{
			Revision:      func() string { return "r1" },
			Client:        func() policy.StatusReporter { return client.Load() },
			Activity:      activity,
			ActivityEvery: time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go r.Run(ctx)
		step := func(name string, change func(), want ...string) {
			t.Helper()
			mu.Lock()
			change()
			mu.Unlock()
			time.Sleep(time.Second)
			synctest.Wait()
			if diff := cmp.Diff(want, client.Load().take()); diff != "" {
				t.Errorf("%s: reports (-want +got):\n%s", name, diff)
			}
		}
		step("first", func() {}, "1/0: e1@01 e2@02; web>pay=1/0 ops>pay=0/1")
		step("nothing changed", func() {})
		step("one renewed, one gone, one added, a count up", func() { svids["e1"], allowed = "11", 5; delete(svids, "e2"); svids["e3"] = "03" },
			"2/1: e1@11 e3@03 -e2; web>pay=5/0")
		srv.mu.Lock()
		srv.lastSeq = 0 // the server restarted
		srv.mu.Unlock()
		step("the server lost the base", func() { svids["e3"] = "13" },
			"3/2: e3@13;", "4/0: e1@11 e3@13; web>pay=5/0 ops>pay=0/1")
		other := &activityServer{}
		client.Store(other)
		step("a new connection", func() { allowed = 6 }, "5/0: e1@11 e3@13; web>pay=6/0 ops>pay=0/1")
		old := &activityServer{old: true}
		client.Store(old)
		step("a server without deltas", func() { allowed = 7 }, "6/0: e1@11 e3@13; web>pay=7/0 ops>pay=0/1")
		step("… is not sent the same twice", func() {})
		step("… but what changed, whole", func() { allowed = 8 }, "7/0: e1@11 e3@13; web>pay=8/0 ops>pay=0/1")
	})
}
