package console

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

// fakeAdmin answers the console's reads from fixed data.
type fakeAdmin struct {
	entries []*adminv1.Entry
	grants  []*adminv1.Grant
	modes   map[string]string
}

func (f *fakeAdmin) ListEntries(_ context.Context, r *adminv1.ListEntriesRequest) (*adminv1.ListEntriesResponse, error) {
	var out []*adminv1.Entry
	for _, e := range f.entries {
		if r.GetSpiffeId() == "" || e.GetSpiffeId() == r.GetSpiffeId() {
			out = append(out, e)
		}
	}
	return &adminv1.ListEntriesResponse{Entries: out}, nil
}
func (f *fakeAdmin) ListGrants(context.Context, *adminv1.ListGrantsRequest) (*adminv1.ListGrantsResponse, error) {
	return &adminv1.ListGrantsResponse{Grants: f.grants}, nil
}
func (f *fakeAdmin) ListTargetModes(context.Context, *adminv1.ListTargetModesRequest) (*adminv1.ListTargetModesResponse, error) {
	return &adminv1.ListTargetModesResponse{Modes: f.modes}, nil
}
func (f *fakeAdmin) ListAgents(context.Context, *adminv1.ListAgentsRequest) (*adminv1.ListAgentsResponse, error) {
	return &adminv1.ListAgentsResponse{Agents: []*adminv1.Agent{{Id: "spiffe://kith.test/kith/agent/join_token/dev", Connected: true}}}, nil
}
func (f *fakeAdmin) ListAuthorities(context.Context, *adminv1.ListAuthoritiesRequest) (*adminv1.ListAuthoritiesResponse, error) {
	return &adminv1.ListAuthoritiesResponse{}, nil
}
func (f *fakeAdmin) ListAuditEvents(context.Context, *adminv1.ListAuditEventsRequest) (*adminv1.ListAuditEventsResponse, error) {
	return &adminv1.ListAuditEventsResponse{Events: []*adminv1.AuditEvent{{Seq: 2, Action: "grant.create", Target: "g-1"}, {Seq: 1, Action: "entry.create", Target: "e-1"}}}, nil
}
func (f *fakeAdmin) VerifyAudit(context.Context, *adminv1.VerifyAuditRequest) (*adminv1.VerifyAuditResponse, error) {
	return &adminv1.VerifyAuditResponse{Ok: true, Count: 2}, nil
}
func (f *fakeAdmin) GetPolicyStatus(context.Context, *adminv1.GetPolicyStatusRequest) (*adminv1.GetPolicyStatusResponse, error) {
	return &adminv1.GetPolicyStatusResponse{ActiveRevision: "builtin"}, nil
}
func (f *fakeAdmin) ListPolicyHistory(context.Context, *adminv1.ListPolicyHistoryRequest) (*adminv1.ListPolicyHistoryResponse, error) {
	return &adminv1.ListPolicyHistoryResponse{}, nil
}
func (f *fakeAdmin) Can(_ context.Context, r *adminv1.CanRequest) (*adminv1.CanResponse, error) {
	return &adminv1.CanResponse{Allowed: r.GetCaller() == "spiffe://kith.test/a"}, nil
}
func (f *fakeAdmin) GetServerInfo(context.Context, *adminv1.GetServerInfoRequest) (*adminv1.GetServerInfoResponse, error) {
	return &adminv1.GetServerInfoResponse{TrustDomain: "kith.test"}, nil
}

func (f *fakeAdmin) GetIdentityActivity(_ context.Context, r *adminv1.GetIdentityActivityRequest) (*adminv1.GetIdentityActivityResponse, error) {
	return &adminv1.GetIdentityActivityResponse{}, nil
}

// fakeFeed hands out one channel per Watch; send delivers a revision to each.
type fakeFeed struct{ chans chan chan int64 }

func (f *fakeFeed) Watch() (<-chan int64, func()) {
	ch := make(chan int64, 1)
	f.chans <- ch
	return ch, func() {}
}

func newTestConsole(t *testing.T, loopback bool) (*Console, *fakeFeed) {
	t.Helper()
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	admin := &fakeAdmin{
		entries: []*adminv1.Entry{{Id: "e-1", SpiffeId: "spiffe://kith.test/ns/shop/sa/a", Labels: map[string]string{"tier": "web"}}},
		grants: []*adminv1.Grant{
			{Id: "g-1", Caller: "spiffe://kith.test/ns/shop/sa/a", Target: "spiffe://kith.test/ns/shop/sa/b", Source: "git:abc", ExpiresAt: timestamppb.New(now.Add(time.Hour))},
			{Id: "g-2", Caller: "spiffe://kith.test/ns/ops/*", Target: "spiffe://kith.test/ns/shop/sa/b", Source: "cli"},
		},
		modes: map[string]string{"spiffe://kith.test/ns/shop/sa/b": "audit"},
	}
	feed := &fakeFeed{chans: make(chan chan int64, 4)}
	c, err := New(Config{Admin: admin, Feed: feed, LoopbackOnly: loopback, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return c, feed
}

func TestTheConsoleAnswersOnlyLoopbackHostsAndOnlyReads(t *testing.T) {
	c, _ := newTestConsole(t, true)
	for _, tc := range []struct {
		name, method, host, path string
		want                     int
	}{
		{"the page on 127.0.0.1", "GET", "127.0.0.1:8080", "/ui/", 200},
		{"the page on localhost", "GET", "localhost:8080", "/ui/", 200},
		{"the API on [::1]", "GET", "[::1]:8080", "/ui/api/info", 200},
		{"a rebound name is refused", "GET", "attacker.example:8080", "/ui/api/graph", 403},
		{"a LAN address is refused", "GET", "192.168.1.10:8080", "/ui/", 403},
		{"a POST is refused", "POST", "127.0.0.1:8080", "/ui/api/graph", 405},
		{"a missing asset is 404", "GET", "127.0.0.1:8080", "/ui/nope.js", 404},
		{"explain without a caller is a 200 with the engine's answer", "GET", "127.0.0.1", "/ui/api/can?caller=spiffe://kith.test/a&target=spiffe://kith.test/b", 200},
		{"a grant that is not there is a 400 saying so", "GET", "127.0.0.1", "/ui/api/grant?id=g-9", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.path, nil)
			r.Host = tc.host
			w := httptest.NewRecorder()
			c.ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Fatalf("%s %s (Host %s) = %d, want %d: %s", tc.method, tc.path, tc.host, w.Code, tc.want, w.Body.String())
			}
			if csp := w.Header().Get("Content-Security-Policy"); w.Code == 200 && !strings.Contains(csp, "default-src 'none'") {
				t.Errorf("Content-Security-Policy = %q", csp)
			}
		})
	}
}

func TestTheGraphNamesNodesByIndexAndMarksSourcesModesAndExpiry(t *testing.T) {
	c, _ := newTestConsole(t, false)
	w := httptest.NewRecorder()
	c.ServeHTTP(w, httptest.NewRequest("GET", "/ui/api/graph", nil))
	var g Graph
	if err := json.Unmarshal(w.Body.Bytes(), &g); err != nil {
		t.Fatalf("%v: %s", err, w.Body.String())
	}
	want := Graph{
		Now: "2026-12-06T12:00:00Z",
		Nodes: []Node{
			{ID: "spiffe://kith.test/ns/ops/*", Domain: "kith.test", Group: "ns/ops", Pattern: true},
			{ID: "spiffe://kith.test/ns/shop/sa/a", Domain: "kith.test", Group: "ns/shop", Entries: 1, Labels: map[string]string{"tier": "web"}},
			{ID: "spiffe://kith.test/ns/shop/sa/b", Domain: "kith.test", Group: "ns/shop", Mode: "audit"},
		},
		Edges: []Edge{
			{ID: "g-1", Caller: 1, Target: 2, Source: "git", ExpiresAt: "2026-12-06T13:00:00Z"},
			{ID: "g-2", Caller: 0, Target: 2, Source: "cli"},
		},
	}
	if diff := cmp.Diff(want, g); diff != "" {
		t.Errorf("graph (-want +got):\n%s", diff)
	}
}

func TestPlacesAndSources(t *testing.T) {
	for _, tc := range []struct{ id, domain, group string }{
		{"spiffe://kith.test/ns/shop/sa/a", "kith.test", "ns/shop"},
		{"spiffe://kith.test/payments", "kith.test", "/"},
		{"spiffe://kith.test/team/x/y", "kith.test", "team"},
		{"spiffe://kith.test/*", "kith.test", "/"},
	} {
		d, g := placeOf(tc.id)
		if diff := cmp.Diff([2]string{tc.domain, tc.group}, [2]string{d, g}); diff != "" {
			t.Errorf("placeOf(%s) (-want +got):\n%s", tc.id, diff)
		}
	}
	got := []string{sourceKind("cli"), sourceKind("git:abc"), sourceKind("k8s:ns/g"), sourceKind("smi:x"), sourceKind("istio:y"), sourceKind("mesh"), sourceKind("")}
	if diff := cmp.Diff([]string{"cli", "git", "k8s", "smi", "istio", "other", "cli"}, got); diff != "" {
		t.Errorf("sourceKind (-want +got):\n%s", diff)
	}
}

func TestEachCommittedRevisionReachesTheEventStream(t *testing.T) {
	c, feed := newTestConsole(t, false)
	srv := httptest.NewServer(c)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/ui/api/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type = %q", ct)
	}
	ch := <-feed.chans
	ch <- 42
	sc := bufio.NewScanner(resp.Body)
	var lines []string
	for sc.Scan() && len(lines) < 2 {
		if l := sc.Text(); strings.HasPrefix(l, "event:") || strings.HasPrefix(l, "data:") {
			lines = append(lines, l)
		}
	}
	if diff := cmp.Diff([]string{"event: change", `data: {"revision":42}`}, lines); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}
