package authz

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDecideExtendedGrantsAndDenyRules(t *testing.T) {
	grants := []Grant{
		{ID: "g-regex", Caller: frontend.String(), Target: payments.String(), Methods: []string{"GET"}, PathRegex: []string{"/metrics", `/v[0-9]+/users$`},
			Source: "smi:default/api-service-metrics", Reason: "route metrics"},
		{ID: "g-header", Caller: devX.String(), Target: payments.String(), Headers: map[string]string{"user-agent": ".*Android.*", "x-team": "blue"}},
		{ID: "g-port", Caller: devilX.String(), Target: payments.String(), Ports: []uint32{8080}},
		{ID: "g-not", Caller: "spiffe://example.org/ns/ops/*", Target: payments.String(), NotMethods: []string{"DELETE"}, NotPaths: []string{"/admin/*"},
			NotCallers: []string{"spiffe://example.org/ns/ops/sa/intern"}},
		{ID: "g-wide", Caller: "spiffe://example.org/ns/qa/*", Target: payments.String()},
		{ID: "d-qa-admin", Caller: "spiffe://example.org/ns/qa/*", Target: payments.String(), Paths: []string{"/admin/*"}, Deny: true,
			Source: "istio:prod/deny-admin", Reason: "rule 0"},
		{ID: "d-any-debug", Caller: "*", Target: payments.String(), PathRegex: []string{"/debug"}, Deny: true},
	}
	ops, intern, qa := mustID("spiffe://example.org/ns/ops/sa/x"), mustID("spiffe://example.org/ns/ops/sa/intern"), mustID("spiffe://example.org/ns/qa/sa/t")
	tests := []struct {
		name string
		in   Input
		want verdict
	}{
		{"a path expression is anchored at the start of the path",
			Input{Caller: frontend, Target: payments, Method: "GET", Path: "/metrics/cpu"},
			verdict{true, true, "g-regex", []string{"allowed by smi default/api-service-metrics, route metrics: grant g-regex allows spiffe://example.org/ns/prod/sa/frontend → spiffe://example.org/ns/prod/sa/payments GET ~/metrics,~/v[0-9]+/users$"}}},
		{"a path expression does not match in the middle of the path",
			Input{Caller: frontend, Target: payments, Method: "GET", Path: "/x/metrics"},
			verdict{false, false, "", []string{"no grant allows spiffe://example.org/ns/prod/sa/frontend to call spiffe://example.org/ns/prod/sa/payments (GET /x/metrics)",
				"grant g-regex (from smi default/api-service-metrics, route metrics) does not allow path /x/metrics"}}},
		{"a path expression with $ matches the whole path",
			Input{Caller: frontend, Target: payments, Method: "GET", Path: "/v12/users"},
			verdict{true, true, "g-regex", nil}},
		{"headers must all match",
			Input{Caller: devX, Target: payments, Method: "GET", Path: "/", Headers: map[string]string{"user-agent": "Mozilla (Linux; Android 14)", "x-team": "blue"}},
			verdict{true, true, "g-header", nil}},
		{"a header that does not match denies",
			Input{Caller: devX, Target: payments, Method: "GET", Path: "/", Headers: map[string]string{"user-agent": "Mozilla (Linux; Android 14)", "x-team": "red"}},
			verdict{false, false, "", []string{"no grant allows spiffe://example.org/ns/dev/sa/x to call spiffe://example.org/ns/prod/sa/payments (GET /)",
				"grant g-header: the request's header x-team does not match"}}},
		{"a missing header denies",
			Input{Caller: devX, Target: payments, Method: "GET", Path: "/", Headers: map[string]string{"x-team": "blue"}},
			verdict{false, false, "", nil}},
		{"a grant limited to a port allows that port",
			Input{Caller: devilX, Target: payments, Method: "GET", Path: "/", Port: 8080},
			verdict{true, true, "g-port", nil}},
		{"a grant limited to a port denies another",
			Input{Caller: devilX, Target: payments, Method: "GET", Path: "/", Port: 9090},
			verdict{false, false, "", []string{"no grant allows spiffe://example.org/ns/devil/x to call spiffe://example.org/ns/prod/sa/payments (GET /)",
				"grant g-port does not allow port 9090"}}},
		{"exceptions leave the rest allowed",
			Input{Caller: ops, Target: payments, Method: "GET", Path: "/api"},
			verdict{true, true, "g-not", nil}},
		{"an excepted method is denied",
			Input{Caller: ops, Target: payments, Method: "DELETE", Path: "/api"},
			verdict{false, false, "", nil}},
		{"an excepted path is denied",
			Input{Caller: ops, Target: payments, Method: "GET", Path: "/admin/users"},
			verdict{false, false, "", nil}},
		{"an excepted caller is denied",
			Input{Caller: intern, Target: payments, Method: "GET", Path: "/api"},
			verdict{false, false, "", []string{"no grant allows spiffe://example.org/ns/ops/sa/intern to call spiffe://example.org/ns/prod/sa/payments (GET /api)",
				"grant g-not excepts caller spiffe://example.org/ns/ops/sa/intern"}}},
		{"a deny rule wins over a grant",
			Input{Caller: qa, Target: payments, Method: "GET", Path: "/admin/x"},
			verdict{false, false, "g-wide", []string{
				"denied by istio prod/deny-admin, rule 0: deny rule d-qa-admin denies spiffe://example.org/ns/qa/* → spiffe://example.org/ns/prod/sa/payments any method /admin/*",
				"grant g-wide allows spiffe://example.org/ns/qa/* → spiffe://example.org/ns/prod/sa/payments any method any path"}}},
		{"a deny rule leaves what it does not match",
			Input{Caller: qa, Target: payments, Method: "GET", Path: "/api"},
			verdict{true, true, "g-wide", nil}},
		{"a deny rule for any caller denies every caller",
			Input{Caller: qa, Target: payments, Method: "GET", Path: "/debug/pprof"},
			verdict{false, false, "g-wide", nil}},
	}
	for _, load := range []string{"PutGrant", "SetData"} {
		e := newEngine(t, Config{})
		if load == "PutGrant" {
			mustPut(t, e, grants...)
		} else if err := e.SetData(context.Background(), Data{Grants: grants}); err != nil {
			t.Fatal(err)
		}
		for _, tt := range tests {
			t.Run(load+": "+tt.name, func(t *testing.T) {
				got := verdictOf(decide(t, e, tt.in))
				if tt.want.Reasons == nil {
					got.Reasons = nil
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("decision (-want +got):\n%s", diff)
				}
			})
		}
	}
}

func TestExtendedGrantsComeAndGo(t *testing.T) {
	e := newEngine(t, Config{})
	in := Input{Caller: frontend, Target: payments, Method: "GET", Path: "/metrics"}
	mustPut(t, e, Grant{ID: "g", Caller: frontend.String(), Target: payments.String(), PathRegex: []string{"/other"}})
	if d := decide(t, e, in); d.Allowed {
		t.Fatalf("allowed by a grant whose expression does not match: %v", d.Reasons)
	}
	mustPut(t, e, Grant{ID: "g", Caller: frontend.String(), Target: payments.String(), PathRegex: []string{"/met"}})
	if d := decide(t, e, in); !d.Allowed {
		t.Fatalf("denied after the grant was replaced by a matching one: %v", d.Reasons)
	}
	mustPut(t, e, Grant{ID: "d", Caller: frontend.String(), Target: payments.String(), Deny: true})
	if d := decide(t, e, in); d.Allowed {
		t.Fatalf("allowed despite a deny rule: %v", d.Reasons)
	}
	for _, id := range []string{"d", "g"} {
		if err := e.DeleteGrant(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.extN.Load(); n != 0 || len(e.ext) != 0 {
		t.Errorf("after deleting every grant: %d extended grants counted, index %v", n, e.ext)
	}
	mustPut(t, e, Grant{ID: "g2", Caller: frontend.String(), Target: payments.String()})
	if d := decide(t, e, in); !d.Allowed {
		t.Fatalf("denied by a deleted rule: %v", d.Reasons)
	}
}

func TestPutGrantRefusesBadExpressions(t *testing.T) {
	e := newEngine(t, Config{})
	for i, g := range []Grant{
		{Caller: frontend.String(), Target: payments.String(), PathRegex: []string{"(unclosed"}},
		{Caller: frontend.String(), Target: payments.String(), PathRegex: []string{"a)|(b"}},
		{Caller: frontend.String(), Target: payments.String(), Headers: map[string]string{"User-Agent": "x"}},
		{Caller: frontend.String(), Target: payments.String(), Ports: []uint32{70000}},
		{Caller: "*", Target: payments.String()},
	} {
		g.ID = fmt.Sprint("g", i)
		if err := e.PutGrant(context.Background(), g); err == nil {
			t.Errorf("PutGrant(%+v) succeeded, want an error", g)
		}
	}
}
