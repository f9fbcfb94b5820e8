package authz

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("example.org")
	frontend = spiffeid.RequireFromPath(td, "/ns/prod/sa/frontend")
	payments = spiffeid.RequireFromPath(td, "/ns/prod/sa/payments")
	devX     = spiffeid.RequireFromPath(td, "/ns/dev/sa/x")
	devilX   = spiffeid.RequireFromPath(td, "/ns/devil/x")
	t0       = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
)

// clock is a settable clock for Config.Now.
type clock struct{ t time.Time }

func (c *clock) Now() time.Time { return c.t }

func newEngine(t testing.TB, cfg Config) *Engine {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return t0 }
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

func mustPut(t testing.TB, e *Engine, grants ...Grant) {
	t.Helper()
	for _, g := range grants {
		if err := e.PutGrant(context.Background(), g); err != nil {
			t.Fatalf("PutGrant(%s): %v", g.ID, err)
		}
	}
}

func decide(t testing.TB, e *Engine, in Input) Decision {
	t.Helper()
	d, err := e.Decide(context.Background(), in)
	if err != nil {
		t.Fatalf("Decide(%s → %s %s %s): %v", in.Caller, in.Target, in.Method, in.Path, err)
	}
	return d
}

// verdict is the part of a Decision most tests compare.
type verdict struct {
	Allowed, PolicyAllowed bool
	Grant                  string
	Reasons                []string
}

func verdictOf(d Decision) verdict {
	return verdict{Allowed: d.Allowed, PolicyAllowed: d.PolicyAllowed, Grant: d.Grant, Reasons: d.Reasons}
}

func TestDecideGrants(t *testing.T) {
	grants := []Grant{
		{ID: "g-exact", Caller: frontend.String(), Target: payments.String(), Methods: []string{"GET"}, Paths: []string{"/api/*"}},
		{ID: "g-dev", Caller: "spiffe://example.org/ns/dev/*", Target: payments.String()},
		{ID: "g-any-prod", Caller: frontend.String(), Target: "spiffe://example.org/ns/prod/*", Methods: []string{"POST"}, Paths: []string{"/pkg.Service/*"}},
		{ID: "g-mid", Caller: devX.String(), Target: frontend.String(), Paths: []string{"/v*/users/*/profile", "/exact"}},
	}
	tests := []struct {
		name string
		in   Input
		want verdict
	}{
		{
			name: "an exact grant allows a matching request",
			in:   Input{Caller: frontend, Target: payments, Method: "GET", Path: "/api/v1/users"},
			want: verdict{Allowed: true, PolicyAllowed: true, Grant: "g-exact", Reasons: []string{
				"grant g-exact allows spiffe://example.org/ns/prod/sa/frontend → spiffe://example.org/ns/prod/sa/payments GET /api/*",
			}},
		},
		{
			name: "another caller is denied because no grant allows it",
			in:   Input{Caller: spiffeid.RequireFromPath(td, "/ns/prod/sa/other"), Target: payments, Method: "GET", Path: "/api/v1"},
			want: verdict{Reasons: []string{
				"no grant allows spiffe://example.org/ns/prod/sa/other to call spiffe://example.org/ns/prod/sa/payments (GET /api/v1)",
			}},
		},
		{
			name: "a caller prefix grant matches an ID below the prefix",
			in:   Input{Caller: spiffeid.RequireFromPath(td, "/ns/dev/sa/x"), Target: payments, Method: "DELETE", Path: "/anything"},
			want: verdict{Allowed: true, PolicyAllowed: true, Grant: "g-dev", Reasons: []string{
				"grant g-dev allows spiffe://example.org/ns/dev/* → spiffe://example.org/ns/prod/sa/payments any method any path",
			}},
		},
		{
			name: "a caller prefix grant does not match a sibling sharing the prefix text",
			in:   Input{Caller: devilX, Target: payments, Method: "GET", Path: "/"},
			want: verdict{Reasons: []string{
				"no grant allows spiffe://example.org/ns/devil/x to call spiffe://example.org/ns/prod/sa/payments (GET /)",
			}},
		},
		{
			name: "a caller prefix grant does not match the prefix itself",
			in:   Input{Caller: spiffeid.RequireFromPath(td, "/ns/dev"), Target: payments, Method: "GET", Path: "/"},
			want: verdict{Reasons: []string{
				"no grant allows spiffe://example.org/ns/dev to call spiffe://example.org/ns/prod/sa/payments (GET /)",
			}},
		},
		{
			name: "a target prefix grant allows a gRPC method",
			in:   Input{Caller: frontend, Target: spiffeid.RequireFromPath(td, "/ns/prod/sa/orders"), Method: "POST", Path: "/pkg.Service/Create"},
			want: verdict{Allowed: true, PolicyAllowed: true, Grant: "g-any-prod", Reasons: []string{
				"grant g-any-prod allows spiffe://example.org/ns/prod/sa/frontend → spiffe://example.org/ns/prod/* POST /pkg.Service/*",
			}},
		},
		{
			name: "a gRPC grant does not allow another service",
			in:   Input{Caller: frontend, Target: spiffeid.RequireFromPath(td, "/ns/prod/sa/orders"), Method: "POST", Path: "/pkg.Other/Create"},
			want: verdict{Reasons: []string{
				"no grant allows spiffe://example.org/ns/prod/sa/frontend to call spiffe://example.org/ns/prod/sa/orders (POST /pkg.Other/Create)",
				"grant g-any-prod does not allow path /pkg.Other/Create",
			}},
		},
		{
			name: "a method the grant does not list is denied and explained",
			in:   Input{Caller: frontend, Target: payments, Method: "DELETE", Path: "/api/v1/users"},
			want: verdict{Reasons: []string{
				"no grant allows spiffe://example.org/ns/prod/sa/frontend to call spiffe://example.org/ns/prod/sa/payments (DELETE /api/v1/users)",
				"grant g-any-prod does not allow method DELETE",
				"grant g-exact does not allow method DELETE",
			}},
		},
		{
			name: "a path outside the glob is denied and explained",
			in:   Input{Caller: frontend, Target: payments, Method: "GET", Path: "/admin"},
			want: verdict{Reasons: []string{
				"no grant allows spiffe://example.org/ns/prod/sa/frontend to call spiffe://example.org/ns/prod/sa/payments (GET /admin)",
				"grant g-any-prod does not allow method GET",
				"grant g-exact does not allow path /admin",
			}},
		},
		{
			name: "a trailing /* does not match the directory itself",
			in:   Input{Caller: frontend, Target: payments, Method: "GET", Path: "/api"},
			want: verdict{Reasons: []string{
				"no grant allows spiffe://example.org/ns/prod/sa/frontend to call spiffe://example.org/ns/prod/sa/payments (GET /api)",
				"grant g-any-prod does not allow method GET",
				"grant g-exact does not allow path /api",
			}},
		},
		{
			name: "dot segments cannot escape a path grant",
			in:   Input{Caller: frontend, Target: payments, Method: "GET", Path: "/api/../admin"},
			want: verdict{Reasons: []string{
				"no grant allows spiffe://example.org/ns/prod/sa/frontend to call spiffe://example.org/ns/prod/sa/payments (GET /api/../admin)",
				"grant g-any-prod does not allow method GET",
				"grant g-exact does not allow path /api/../admin",
			}},
		},
		{
			name: "a * inside a path matches within one segment",
			in:   Input{Caller: devX, Target: frontend, Method: "GET", Path: "/v2/users/42/profile"},
			want: verdict{Allowed: true, PolicyAllowed: true, Grant: "g-mid", Reasons: []string{
				"grant g-mid allows spiffe://example.org/ns/dev/sa/x → spiffe://example.org/ns/prod/sa/frontend any method /v*/users/*/profile,/exact",
			}},
		},
		{
			name: "a * inside a path does not cross segments",
			in:   Input{Caller: devX, Target: frontend, Method: "GET", Path: "/v2/users/42/x/profile"},
			want: verdict{Reasons: []string{
				"no grant allows spiffe://example.org/ns/dev/sa/x to call spiffe://example.org/ns/prod/sa/frontend (GET /v2/users/42/x/profile)",
				"grant g-mid does not allow path /v2/users/42/x/profile",
			}},
		},
		{
			name: "a request without caller identity is denied",
			in:   Input{Target: payments, Method: "GET", Path: "/api/v1"},
			want: verdict{Reasons: []string{"no caller identity"}},
		},
	}
	e := newEngine(t, Config{})
	mustPut(t, e, grants...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := decide(t, e, tt.in)
			if diff := cmp.Diff(tt.want, verdictOf(d)); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
			if !d.Allowed && d.HTTPStatus != 403 {
				t.Errorf("HTTPStatus = %d, want 403", d.HTTPStatus)
			}
			if d.Revision != BuiltinRevision || d.Mode != ModeEnforce {
				t.Errorf("Revision, Mode = %q, %q; want %q, %q", d.Revision, d.Mode, BuiltinRevision, ModeEnforce)
			}
		})
	}
}

func TestGrantExpiresWithTheClock(t *testing.T) {
	c := &clock{t: t0}
	e := newEngine(t, Config{Now: c.Now})
	mustPut(t, e, Grant{ID: "g-1", Caller: frontend.String(), Target: payments.String(), ExpiresAt: t0.Add(time.Hour)})
	in := Input{Caller: frontend, Target: payments, Method: "GET", Path: "/"}

	if d := decide(t, e, in); !d.Allowed {
		t.Fatalf("before expiry: denied: %v", d.Reasons)
	}
	c.t = t0.Add(time.Hour - time.Nanosecond)
	if d := decide(t, e, in); !d.Allowed {
		t.Fatalf("just before expiry: denied: %v", d.Reasons)
	}
	c.t = t0.Add(time.Hour)
	want := verdict{Reasons: []string{
		"no grant allows spiffe://example.org/ns/prod/sa/frontend to call spiffe://example.org/ns/prod/sa/payments (GET /)",
		"grant g-1 expired at 2026-03-01T13:00:00Z",
	}}
	if diff := cmp.Diff(want, verdictOf(decide(t, e, in))); diff != "" {
		t.Errorf("at expiry (-want +got):\n%s", diff)
	}
}

func TestAuditModeAllowsButKeepsTheDenial(t *testing.T) {
	e := newEngine(t, Config{})
	if err := e.SetMode(context.Background(), payments, ModeAudit); err != nil {
		t.Fatal(err)
	}
	d := decide(t, e, Input{Caller: frontend, Target: payments, Method: "GET", Path: "/"})
	want := Decision{Allowed: true, Mode: ModeAudit, Revision: BuiltinRevision, Reasons: []string{
		"no grant allows spiffe://example.org/ns/prod/sa/frontend to call spiffe://example.org/ns/prod/sa/payments (GET /)",
	}}
	if diff := cmp.Diff(want, d); diff != "" {
		t.Errorf("decision (-want +got):\n%s", diff)
	}
	if got := e.Stats(); got.AuditDenied != 1 || got.Denied != 0 {
		t.Errorf("Stats = %+v, want one audit denial", got)
	}
	// Other targets stay enforced, and enforce mode can be set back.
	if d := decide(t, e, Input{Caller: frontend, Target: devX, Method: "GET", Path: "/"}); d.Allowed {
		t.Errorf("other target allowed in enforce mode")
	}
	if err := e.SetMode(context.Background(), payments, ModeEnforce); err != nil {
		t.Fatal(err)
	}
	if d := decide(t, e, Input{Caller: frontend, Target: payments, Method: "GET", Path: "/"}); d.Allowed {
		t.Errorf("allowed after switching back to enforce")
	}
}

// An engine that answers "what if" (the server's, for kith can) gives the same decision for a target in
// audit mode, but does not log or count it as a request that would have been denied: no traffic was seen.
func TestAWhatIfEngineDoesNotLogAuditDenialsAsTraffic(t *testing.T) {
	for _, whatIf := range []bool{false, true} {
		var logs bytes.Buffer
		e := newEngine(t, Config{WhatIf: whatIf, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err := e.SetMode(context.Background(), payments, ModeAudit); err != nil {
			t.Fatal(err)
		}
		d := decide(t, e, Input{Caller: frontend, Target: payments, Method: "GET", Path: "/"})
		if !d.Allowed || d.PolicyAllowed || d.Mode != ModeAudit {
			t.Errorf("WhatIf %t: decision %+v, want allowed in audit mode with the policy denying", whatIf, d)
		}
		logged := strings.Contains(logs.String(), "would be denied")
		counted := e.Stats().AuditDenied == 1
		if logged != !whatIf || counted != !whatIf {
			t.Errorf("WhatIf %t: logged %t, counted %t; want both %t", whatIf, logged, counted, !whatIf)
		}
	}
}

const extPolicy = `package kith.ext

deny contains "dev may not call prod" if {
	input.kith.caller.labels.env == "dev"
	input.kith.target.labels.env == "prod"
}

allow if {
	input.kith.method == "GET"
	input.parsed_path == ["healthz"]
}

headers["x-kith-caller-env"] := input.kith.caller.labels.env
`

func TestExtensions(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, Config{})
	if err := e.SetPolicy(ctx, "rev-1", map[string]string{"ext.rego": extPolicy}); err != nil {
		t.Fatalf("SetPolicy: %v", err)
	}
	err := e.SetData(ctx, Data{
		Grants: []Grant{
			{ID: "g-dev", Caller: devX.String(), Target: payments.String()},
			{ID: "g-front", Caller: frontend.String(), Target: payments.String()},
		},
		Labels: map[string]map[string]string{
			devX.String():     {"env": "dev"},
			payments.String(): {"env": "prod"},
			frontend.String(): {"env": "prod"},
		},
	})
	if err != nil {
		t.Fatalf("SetData: %v", err)
	}
	tests := []struct {
		name        string
		in          Input
		want        verdict
		wantHeaders map[string]string
	}{
		{
			name: "an ext deny wins over a grant",
			in:   Input{Caller: devX, Target: payments, Method: "GET", Path: "/api"},
			want: verdict{Grant: "g-dev", Reasons: []string{
				"denied by kith.ext: dev may not call prod",
				"grant g-dev allows spiffe://example.org/ns/dev/sa/x → spiffe://example.org/ns/prod/sa/payments any method any path",
			}},
			wantHeaders: map[string]string{"x-kith-caller-env": "dev"},
		},
		{
			name: "a grant allows and labels become headers",
			in:   Input{Caller: frontend, Target: payments, Method: "GET", Path: "/api"},
			want: verdict{Allowed: true, PolicyAllowed: true, Grant: "g-front", Reasons: []string{
				"grant g-front allows spiffe://example.org/ns/prod/sa/frontend → spiffe://example.org/ns/prod/sa/payments any method any path",
			}},
			wantHeaders: map[string]string{"x-kith-caller-env": "prod"},
		},
		{
			name: "an ext allow allows without a grant",
			in:   Input{Caller: spiffeid.RequireFromPath(td, "/probe"), Target: devX, Method: "GET", Path: "/healthz"},
			want: verdict{Allowed: true, PolicyAllowed: true, Reasons: []string{"allowed by kith.ext"}},
		},
		{
			name: "an ext allow applies to requests without caller identity",
			in:   Input{Target: devX, Method: "GET", Path: "/healthz"},
			want: verdict{Allowed: true, PolicyAllowed: true, Reasons: []string{"no caller identity", "allowed by kith.ext"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := decide(t, e, tt.in)
			if diff := cmp.Diff(tt.want, verdictOf(d)); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantHeaders, d.Headers); diff != "" {
				t.Errorf("headers (-want +got):\n%s", diff)
			}
			if d.Revision != "rev-1" {
				t.Errorf("Revision = %q, want rev-1", d.Revision)
			}
		})
	}
}

func TestExtHTTPStatus(t *testing.T) {
	e := newEngine(t, Config{})
	err := e.SetPolicy(context.Background(), "r", map[string]string{"s.rego": "package kith.ext\n\nhttp_status := 401 if input.kith.caller.id == \"\"\n"})
	if err != nil {
		t.Fatal(err)
	}
	if d := decide(t, e, Input{Target: payments, Method: "GET", Path: "/"}); d.HTTPStatus != 401 {
		t.Errorf("HTTPStatus = %d, want 401", d.HTTPStatus)
	}
	if d := decide(t, e, Input{Caller: frontend, Target: payments, Method: "GET", Path: "/"}); d.HTTPStatus != 403 {
		t.Errorf("HTTPStatus = %d, want 403", d.HTTPStatus)
	}
}

func TestSetPolicyRefusesBadPolicies(t *testing.T) {
	tests := []struct {
		name    string
		modules map[string]string
		wantErr []string // substrings
	}{
		{
			name:    "a syntax error is refused with file and line",
			modules: map[string]string{"bad.rego": "package kith.ext\n\nallow if {\n  input.x ==\n}\n"},
			wantErr: []string{"bad.rego:", "rego_parse_error"},
		},
		{
			name:    "a compile error is refused with file and line",
			modules: map[string]string{"ok.rego": "package kith.ext\n", "undef.rego": "package kith.ext\n\nallow if {\n\tnot_a_function(1)\n}\n"},
			wantErr: []string{"undef.rego:4", "not_a_function"},
		},
		{
			name:    "conflicting header values are refused at evaluation",
			modules: map[string]string{"h.rego": "package kith.ext\n\nheaders[\"x\"] := \"a\"\n\nheaders[\"x\"] := \"b\" if input.kith.method != \"\"\n"},
			wantErr: []string{"h.rego:", "conflict"},
		},
		{
			name:    "a runtime error in a built-in is refused",
			modules: map[string]string{"div.rego": "package kith.ext\n\nallow if {\n\tx := count(input.parsed_path) - count(input.parsed_path)\n\t1 / x > 0\n}\n"},
			wantErr: []string{"div.rego:5", "divide by zero"},
		},
		{
			name:    "a module in Kith's own package is refused",
			modules: map[string]string{"hijack.rego": "package kith.authz\n\nallow := true\n"},
			wantErr: []string{"hijack.rego:1", "reserved"},
		},
		{
			name:    "a module replacing grants is refused",
			modules: map[string]string{"g.rego": "package kith\n\ngrants := {}\n"},
			wantErr: []string{"g.rego:1", "reserved"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			e := newEngine(t, Config{})
			mustPut(t, e, Grant{ID: "g", Caller: frontend.String(), Target: payments.String()})
			if err := e.SetPolicy(ctx, "good", map[string]string{"ext.rego": extPolicy}); err != nil {
				t.Fatal(err)
			}
			err := e.SetPolicy(ctx, "bad", tt.modules)
			if err == nil {
				t.Fatal("SetPolicy succeeded, want an error")
			}
			t.Logf("error: %v", err)
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if got := e.Revision(); got != "good" {
				t.Errorf("Revision = %q, want the old one", got)
			}
			d := decide(t, e, Input{Caller: frontend, Target: payments, Method: "GET", Path: "/"})
			if !d.Allowed || d.Revision != "good" || d.Headers["x-kith-caller-env"] != "" {
				t.Errorf("old policy does not decide: %+v", d)
			}
		})
	}
}

func TestOPAEnvoyStyleDecision(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		in     Input
		want   Decision
	}{
		{
			name: "a boolean allow is honoured",
			policy: `package envoy.authz

default allow := false

allow if {
	input.attributes.request.http.method == "GET"
	input.parsed_path[0] == "api"
}
`,
			in:   envoyInput("GET", "/api/v1/users?x=1"),
			want: Decision{Allowed: true, PolicyAllowed: true, Mode: ModeEnforce, Revision: "r", Reasons: []string{"allowed by data.envoy.authz.allow"}},
		},
		{
			name: "a boolean deny is honoured",
			policy: `package envoy.authz

default allow := false

allow if {
	input.attributes.request.http.method == "GET"
	input.parsed_path[0] == "api"
}
`,
			in:   envoyInput("POST", "/api/v1/users"),
			want: Decision{Mode: ModeEnforce, HTTPStatus: 403, Revision: "r", Reasons: []string{"denied by data.envoy.authz.allow"}},
		},
		{
			name: "the object form sets headers and status",
			policy: `package envoy.authz

allow := {"allowed": true, "headers": {"x": "y"}, "http_status": 200} if input.parsed_query.x == ["1"]
`,
			in:   envoyInput("GET", "/api/v1/users?x=1"),
			want: Decision{Allowed: true, PolicyAllowed: true, Mode: ModeEnforce, Headers: map[string]string{"x": "y"}, Revision: "r", Reasons: []string{"allowed by data.envoy.authz.allow"}},
		},
		{
			name: "the object form can deny with a status and body",
			policy: `package envoy.authz

allow := {"allowed": false, "http_status": 429, "body": "slow down"}
`,
			in:   envoyInput("GET", "/"),
			want: Decision{Mode: ModeEnforce, HTTPStatus: 429, Revision: "r", Reasons: []string{"denied by data.envoy.authz.allow", "slow down"}},
		},
		{
			name:   "an undefined decision denies",
			policy: "package envoy.authz\n\nallow if input.nope\n",
			in:     envoyInput("GET", "/"),
			want:   Decision{Mode: ModeEnforce, HTTPStatus: 403, Revision: "r", Reasons: []string{"data.envoy.authz.allow is undefined"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEngine(t, Config{Decision: "envoy/authz/allow"})
			if err := e.SetPolicy(context.Background(), "r", map[string]string{"envoy.rego": tt.policy}); err != nil {
				t.Fatalf("SetPolicy: %v", err)
			}
			if diff := cmp.Diff(tt.want, decide(t, e, tt.in)); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParsedQueryComesFromTheRawQuery(t *testing.T) {
	e := newEngine(t, Config{Decision: "envoy/authz/allow"})
	policy := "package envoy.authz\n\nallow if input.parsed_query.lang == [\"en\", \"fr\"]\n"
	if err := e.SetPolicy(context.Background(), "r", map[string]string{"envoy.rego": policy}); err != nil {
		t.Fatalf("SetPolicy: %v", err)
	}
	tests := []struct {
		name string
		in   Input
		want bool
	}{
		{"a raw query is parsed", Input{Caller: frontend, Target: payments, Method: "GET", Path: "/doc", Query: "lang=en&lang=fr"}, true},
		{"another raw query does not match", Input{Caller: frontend, Target: payments, Method: "GET", Path: "/doc", Query: "lang=en"}, false},
		{"the query in Path wins", Input{Caller: frontend, Target: payments, Method: "GET", Path: "/doc?lang=de", Query: "lang=en&lang=fr"}, false},
		{"a parsed query wins", Input{Caller: frontend, Target: payments, Method: "GET", Path: "/doc", Query: "lang=de", ParsedQuery: map[string][]string{"lang": {"en", "fr"}}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := decide(t, e, tt.in).Allowed; got != tt.want {
				t.Errorf("Allowed = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDecideStopsWhenTheContextIsDone(t *testing.T) {
	e := newEngine(t, Config{})
	// Seconds of work for a request to /slow (the sample requests SetPolicy evaluates go elsewhere).
	slow := "package kith.ext\n\nallow if {\n\tinput.kith.path == \"/slow\"\n\tcount([x | some x in numbers.range(1, 5000000); x % 7 == 0]) < 0\n}\n"
	if err := e.SetPolicy(context.Background(), "r", map[string]string{"ext.rego": slow}); err != nil {
		t.Fatalf("SetPolicy: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := e.Decide(ctx, Input{Caller: frontend, Target: payments, Method: "GET", Path: "/slow"})
	if err == nil {
		t.Fatalf("Decide succeeded after %s, want a cancellation error", time.Since(start))
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Decide took %s after its context was done", took)
	}
	if !strings.Contains(err.Error(), "cancel") {
		t.Errorf("Decide error = %v, want one saying the evaluation was cancelled", err)
	}
}

// envoyInput is what the ext_authz server would pass for a request.
func envoyInput(method, pathAndQuery string) Input {
	p, _, _ := strings.Cut(pathAndQuery, "?")
	return Input{
		Caller: frontend, Target: payments, Method: method, Path: p,
		Attributes: map[string]any{
			"source":      map[string]any{"principal": frontend.String()},
			"destination": map[string]any{"principal": payments.String()},
			"request": map[string]any{"http": map[string]any{
				"method": method, "path": pathAndQuery, "headers": map[string]any{":path": pathAndQuery},
			}},
		},
	}
}

func TestSetPolicyRefusesAnInvalidCustomDecision(t *testing.T) {
	e := newEngine(t, Config{Decision: "envoy/authz/allow"})
	err := e.SetPolicy(context.Background(), "r", map[string]string{"e.rego": "package envoy.authz\n\nallow := \"yes\"\n"})
	if err == nil || !strings.Contains(err.Error(), "want a boolean or an object") {
		t.Errorf("SetPolicy error = %v, want one about the decision's type", err)
	}
}

func TestGrantChangesTakeEffectWithoutSetPolicy(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, Config{})
	in := Input{Caller: frontend, Target: payments, Method: "GET", Path: "/"}
	steps := []struct {
		name   string
		change func() error
		want   bool
	}{
		{"no grant denies", func() error { return nil }, false},
		{"putting a grant allows", func() error {
			return e.PutGrant(ctx, Grant{ID: "g", Caller: frontend.String(), Target: payments.String(), Methods: []string{"GET"}})
		}, true},
		{"replacing the grant with another method denies", func() error {
			return e.PutGrant(ctx, Grant{ID: "g", Caller: frontend.String(), Target: payments.String(), Methods: []string{"POST"}})
		}, false},
		{"replacing the grant with another caller key allows", func() error {
			return e.PutGrant(ctx, Grant{ID: "g", Caller: "spiffe://example.org/ns/prod/*", Target: payments.String()})
		}, true},
		{"deleting the grant denies", func() error { return e.DeleteGrant(ctx, "g") }, false},
		{"deleting an unknown grant is harmless", func() error { return e.DeleteGrant(ctx, "nope") }, false},
		{"SetData replaces the grants", func() error {
			return e.SetData(ctx, Data{Grants: []Grant{{ID: "h", Caller: frontend.String(), Target: "spiffe://example.org/*"}}})
		}, true},
	}
	for _, s := range steps {
		if err := s.change(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := decide(t, e, in).Allowed; got != s.want {
			t.Errorf("%s: Allowed = %v, want %v", s.name, got, s.want)
		}
	}
	if diff := cmp.Diff([]string{"h"}, grantIDs(e.Grants())); diff != "" {
		t.Errorf("Grants (-want +got):\n%s", diff)
	}
	if e.Revision() != BuiltinRevision {
		t.Errorf("Revision = %q, want %q", e.Revision(), BuiltinRevision)
	}
}

func grantIDs(gs []Grant) []string {
	var ids []string
	for _, g := range gs {
		ids = append(ids, g.ID)
	}
	return ids
}

func TestDeleteGrantLeavesNoEmptyEntries(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, Config{})
	mustPut(t, e, Grant{ID: "a", Caller: frontend.String(), Target: payments.String()})
	if err := e.DeleteGrant(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	txnRead := func() any {
		v, err := readStore(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if got := txnRead(); size(got) != 0 {
		t.Errorf("data.kith.grants = %v, want empty", got)
	}
}

func mustID(s string) spiffeid.ID { return spiffeid.RequireFromString(s) }

func TestSetPolicyReplacesModules(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, Config{})
	mustPut(t, e, Grant{ID: "g", Caller: frontend.String(), Target: payments.String()})
	deny := "package kith.ext\n\ndeny contains \"no\" if true\n"
	in := Input{Caller: frontend, Target: payments, Method: "GET", Path: "/"}
	if err := e.SetPolicy(ctx, "r1", map[string]string{"deny.rego": deny}); err != nil {
		t.Fatal(err)
	}
	if d := decide(t, e, in); d.Allowed || d.Revision != "r1" {
		t.Fatalf("with deny module: %+v", d)
	}
	if err := e.SetPolicy(ctx, "r2", nil); err != nil {
		t.Fatal(err)
	}
	if d := decide(t, e, in); !d.Allowed || d.Revision != "r2" {
		t.Fatalf("after removing the deny module: %+v", d)
	}
}

func TestPutGrantRefusesAnInvalidGrant(t *testing.T) {
	e := newEngine(t, Config{})
	if err := e.PutGrant(context.Background(), Grant{ID: "g", Caller: "nope", Target: payments.String()}); err == nil {
		t.Error("PutGrant accepted an invalid grant")
	}
	if err := e.SetData(context.Background(), Data{Modes: map[string]Mode{payments.String(): "loud"}}); err == nil {
		t.Error("SetData accepted an unknown mode")
	}
}

func TestPathKeys(t *testing.T) {
	tests := []struct {
		path string
		max  int
		want []string
	}{
		{"/api/v1/users", 10, []string{"/api/v1/users", "/*", "/api/*", "/api/v1/*"}},
		{"/api/v1/users", 2, []string{"/api/v1/users", "/*", "/api/*"}},
		{"/api/", 10, []string{"/api/", "/*", "/api/*"}},
		{"/", 10, []string{"/", "/*"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s has keys up to %d slashes", tt.path, tt.max), func(t *testing.T) {
			var got []string
			pathKeysTerm(ast.StringTerm(tt.path), tt.path, tt.max).Value.(*ast.Array).Foreach(func(k *ast.Term) {
				got = append(got, string(k.Value.(ast.String)))
			})
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("pathKeysTerm (-want +got):\n%s", diff)
			}
		})
	}
}

// Grants match the path as Envoy forwards it with normalize_path, merge_slashes and
// path_with_escaped_slashes_action: REJECT_REQUEST; encoded dots cannot climb out of a path grant and
// encoded slashes are refused.
func TestDecideMatchesTheNormalisedPath(t *testing.T) {
	e := newEngine(t, Config{})
	mustPut(t, e, Grant{ID: "g", Caller: frontend.String(), Target: payments.String(), Paths: []string{"/api/*"}})
	tests := []struct {
		path        string
		wantAllowed bool
		wantStatus  int
		wantReason  string
	}{
		{path: "/api/x", wantAllowed: true},
		{path: "/api/%78", wantAllowed: true},
		{path: "//api//x", wantAllowed: true},
		{path: "/api/./x", wantAllowed: true},
		{path: "/api/%2e%2e/admin", wantStatus: 403, wantReason: "does not allow path"},
		{path: "/api/.%2E/admin", wantStatus: 403, wantReason: "does not allow path"},
		{path: "/api/../admin", wantStatus: 403, wantReason: "does not allow path"},
		{path: "/api/..%2fadmin", wantStatus: 400, wantReason: "request path refused"},
		{path: "/api/..%2Fadmin?x=1", wantStatus: 400, wantReason: "request path refused"},
		{path: "/api/..%5cadmin", wantStatus: 400, wantReason: "request path refused"},
		{path: `/api/..\admin`, wantStatus: 400, wantReason: "request path refused"},
		{path: "/api/%zz", wantStatus: 400, wantReason: "request path refused"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s allowed by /api/* is %v", tt.path, tt.wantAllowed), func(t *testing.T) {
			d, err := e.Decide(context.Background(), Input{Caller: frontend, Target: payments, Method: "GET", Path: tt.path})
			if err != nil {
				t.Fatal(err)
			}
			if d.Allowed != tt.wantAllowed || d.HTTPStatus != tt.wantStatus {
				t.Errorf("allowed = %v, status %d, want %v, %d (reasons %q)", d.Allowed, d.HTTPStatus, tt.wantAllowed, tt.wantStatus, d.Reasons)
			}
			if tt.wantReason != "" && !strings.Contains(strings.Join(d.Reasons, "; "), tt.wantReason) {
				t.Errorf("reasons %q, want one saying %q", d.Reasons, tt.wantReason)
			}
		})
	}
	t.Run("a refused path is refused in audit mode too", func(t *testing.T) {
		if err := e.SetMode(context.Background(), payments, ModeAudit); err != nil {
			t.Fatal(err)
		}
		defer e.SetMode(context.Background(), payments, ModeEnforce)
		d, err := e.Decide(context.Background(), Input{Caller: frontend, Target: payments, Method: "GET", Path: "/api/..%2fadmin"})
		if err != nil || d.Allowed {
			t.Errorf("Decide = allowed %v, %v; want refused", d.Allowed, err)
		}
	})
}

func TestConcurrentDecisionsAndChanges(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, Config{})
	in := Input{Caller: frontend, Target: payments, Method: "GET", Path: "/api/x"}
	done := make(chan struct{})
	errs := make(chan error, 1)
	go func() {
		defer close(done)
		for i := range 200 {
			g := Grant{ID: fmt.Sprintf("g%d", i%5), Caller: "spiffe://example.org/ns/prod/*", Target: payments.String()}
			if err := e.PutGrant(ctx, g); err != nil {
				errs <- err
				return
			}
			if i%20 == 0 {
				if err := e.SetPolicy(ctx, fmt.Sprint(i), map[string]string{"ext.rego": extPolicy}); err != nil {
					errs <- err
					return
				}
				if err := e.SetLabels(ctx, frontend, map[string]string{"env": fmt.Sprint(i)}); err != nil {
					errs <- err
					return
				}
			}
			if err := e.DeleteGrant(ctx, fmt.Sprintf("g%d", (i+3)%5)); err != nil {
				errs <- err
				return
			}
		}
	}()
	for {
		select {
		case <-done:
			select {
			case err := <-errs:
				t.Fatal(err)
			default:
			}
			return
		default:
		}
		if _, err := e.Decide(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
}
