package extauthz_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/extauthz"
	"github.com/kithid/kith/internal/testutil"
)

func TestCheck(t *testing.T) {
	ctx := context.Background()
	e, err := authz.New(authz.Config{Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, e,
		authz.Grant{ID: "g-frontend", Caller: frontend.String(), Target: payments.String(), Methods: []string{"GET"}, Paths: []string{"/api/*"}},
		authz.Grant{ID: "g-dev", Caller: "spiffe://example.org/ns/dev/*", Target: "spiffe://example.org/ns/prod/*", Paths: []string{"/debug/*"}},
	)
	if err := e.SetMode(ctx, ledger, authz.ModeAudit); err != nil {
		t.Fatal(err)
	}

	allow := func(caller string) map[string]string {
		return map[string]string{"x-kith-caller": caller, "x-kith-decision": "allow"}
	}
	tests := []struct {
		name       string
		req        request
		want       result
		wantReason string // in x-kith-reason and the body of a denial
	}{
		{
			name: "a granted caller is allowed",
			req:  request{caller: frontend.String(), target: payments.String(), method: "GET", path: "/api/v1/users?limit=10"},
			want: result{Code: 0, Headers: allow(frontend.String())},
		},
		{
			name:       "a caller without a grant is denied with 403",
			req:        request{caller: batch.String(), target: payments.String(), method: "GET", path: "/api/v1/users"},
			want:       result{Code: 7, HTTPStatus: 403},
			wantReason: "no grant allows spiffe://example.org/ns/prod/sa/batch to call spiffe://example.org/ns/prod/sa/payments (GET /api/v1/users)",
		},
		{
			name:       "a method the grant does not list is denied",
			req:        request{caller: frontend.String(), target: payments.String(), method: "DELETE", path: "/api/v1/users"},
			want:       result{Code: 7, HTTPStatus: 403},
			wantReason: "no grant allows",
		},
		{
			name:       "a path the grant does not cover is denied",
			req:        request{caller: frontend.String(), target: payments.String(), method: "GET", path: "/admin"},
			want:       result{Code: 7, HTTPStatus: 403},
			wantReason: "no grant allows",
		},
		{
			name:       "dot segments do not escape a path grant",
			req:        request{caller: frontend.String(), target: payments.String(), method: "GET", path: "/api/../admin"},
			want:       result{Code: 7, HTTPStatus: 403},
			wantReason: "no grant allows",
		},
		{
			name:       "encoded dot segments do not escape a path grant",
			req:        request{caller: frontend.String(), target: payments.String(), method: "GET", path: "/api/%2e%2e/admin"},
			want:       result{Code: 7, HTTPStatus: 403},
			wantReason: "no grant allows",
		},
		{
			name:       "an encoded slash is refused with 400",
			req:        request{caller: frontend.String(), target: payments.String(), method: "GET", path: "/api/..%2fadmin"},
			want:       result{Code: 7, HTTPStatus: 400},
			wantReason: "request path refused",
		},
		{
			name:       "an encoded slash is refused for an audit-mode target too",
			req:        request{caller: batch.String(), target: ledger.String(), method: "GET", path: "/ledger/..%2Fadmin"},
			want:       result{Code: 7, HTTPStatus: 400},
			wantReason: "request path refused",
		},
		{
			name: "a prefix grant allows every caller and target below it",
			req:  request{caller: devTool.String(), target: ledger.String(), method: "POST", path: "/debug/pprof"},
			want: result{Code: 0, Headers: allow(devTool.String())},
		},
		{
			name:       "a prefix grant does not allow a caller outside it",
			req:        request{caller: scott.String(), target: payments.String(), method: "POST", path: "/debug/pprof"},
			want:       result{Code: 7, HTTPStatus: 403},
			wantReason: "no grant allows",
		},
		{
			name: "an audit-mode target lets a denied request through and says so",
			req:  request{caller: batch.String(), target: ledger.String(), method: "GET", path: "/ledger"},
			want: result{Code: 0, Headers: map[string]string{
				"x-kith-caller": batch.String(), "x-kith-decision": "audit-deny",
				"x-kith-reason": "no grant allows spiffe://example.org/ns/prod/sa/batch to call spiffe://example.org/ns/prod/sa/ledger (GET /ledger)",
			}},
		},
		{
			name:       "a request without a caller identity is denied",
			req:        request{target: payments.String(), method: "GET", path: "/api/v1/users"},
			want:       result{Code: 7, HTTPStatus: 403},
			wantReason: "no caller identity",
		},
		{
			name:       "a source principal that is not a SPIFFE ID is no caller",
			req:        request{caller: "CN=frontend,O=Acme", target: payments.String(), method: "GET", path: "/api/v1/users"},
			want:       result{Code: 7, HTTPStatus: 403},
			wantReason: `source principal "CN=frontend,O=Acme" is not a SPIFFE ID`,
		},
		{
			name:       "a request without a destination principal is denied",
			req:        request{caller: frontend.String(), method: "GET", path: "/api/v1/users"},
			want:       result{Code: 7, HTTPStatus: 403},
			wantReason: "no target identity",
		},
		{
			name: "a forged XFCC header names no caller",
			req: request{target: payments.String(), method: "GET", path: "/api/x",
				headers: map[string]string{"x-forwarded-client-cert": "By=spiffe://example.org/ns/prod/sa/payments;URI=" + frontend.String()}},
			want:       result{Code: 7, HTTPStatus: 403},
			wantReason: "no caller identity",
		},
		{
			name: "a forged XFCC header does not replace the peer's identity",
			req: request{caller: scott.String(), target: payments.String(), method: "GET", path: "/api/x",
				headers: map[string]string{"x-forwarded-client-cert": "URI=" + frontend.String()}},
			want:       result{Code: 7, HTTPStatus: 403},
			wantReason: "no grant allows",
		},
		{
			name:       "a caller whose path only starts like a prefix grant's is not below it (ns/devil vs ns/dev/*)",
			req:        request{caller: "spiffe://example.org/ns/devil/sa/tool", target: payments.String(), method: "GET", path: "/debug/pprof"},
			want:       result{Code: 7, HTTPStatus: 403},
			wantReason: "no grant allows",
		},
		{
			name:       "the same path in another trust domain is another caller",
			req:        request{caller: "spiffe://evil.org/ns/dev/sa/tool", target: payments.String(), method: "GET", path: "/debug/pprof"},
			want:       result{Code: 7, HTTPStatus: 403},
			wantReason: "no grant allows",
		},
		{
			name: "client-sent x-kith headers are removed from an allowed request",
			req: request{caller: frontend.String(), target: payments.String(), method: "GET", path: "/api/x",
				headers: map[string]string{"x-kith-caller-env": "dev", "x-kith-caller": "spiffe://example.org/forged"}},
			want: result{Code: 0, Headers: allow(frontend.String()), Remove: []string{"x-kith-caller-env"}},
		},
	}
	for _, network := range []string{"unix", "tcp"} {
		client := serve(t, network, extauthz.Config{Decider: e})
		t.Run("over "+network, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					resp, err := client.Check(ctx, tt.req.proto())
					if err != nil {
						t.Fatal(err)
					}
					got := summarize(resp)
					if tt.want.Code != 0 {
						checkDenial(t, got, tt.wantReason)
					}
					if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(result{}, "Body"), ignoreDenialHeaders(tt.want.Code)); diff != "" {
						t.Errorf("response (-want +got):\n%s", diff)
					}
				})
			}
		})
	}
}

// ignoreDenialHeaders leaves the headers of denials to checkDenial.
func ignoreDenialHeaders(code int32) cmp.Option {
	if code == 0 {
		return cmp.Options{}
	}
	return cmpopts.IgnoreFields(result{}, "Headers")
}

// checkDenial checks the parts every denial has: the decision and reason
// headers and a JSON body whose first reason contains wantReason.
func checkDenial(t *testing.T, got result, wantReason string) {
	t.Helper()
	if got.Headers["x-kith-decision"] != "deny" {
		t.Errorf("x-kith-decision = %q, want deny", got.Headers["x-kith-decision"])
	}
	if !strings.Contains(got.Headers["x-kith-reason"], wantReason) {
		t.Errorf("x-kith-reason = %q, want it to contain %q", got.Headers["x-kith-reason"], wantReason)
	}
	var body struct {
		Allowed *bool    `json:"allowed"`
		Reasons []string `json:"reasons"`
	}
	if err := json.Unmarshal([]byte(got.Body), &body); err != nil {
		t.Fatalf("body %q: %v", got.Body, err)
	}
	if body.Allowed == nil || *body.Allowed || len(body.Reasons) == 0 || !strings.Contains(body.Reasons[0], wantReason) {
		t.Errorf("body = %s, want allowed false and a first reason containing %q", got.Body, wantReason)
	}
}

func TestCheckDeniesOnceAGrantExpires(t *testing.T) {
	ctx := context.Background()
	clk := testutil.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	e, err := authz.New(authz.Config{Now: clk.Now, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, e, authz.Grant{ID: "g-1h", Caller: scott.String(), Target: payments.String(), ExpiresAt: clk.Now().Add(time.Hour)})
	client := serve(t, "unix", extauthz.Config{Decider: e})
	req := request{caller: scott.String(), target: payments.String(), method: "GET", path: "/"}.proto()

	resp, err := client.Check(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetStatus().GetCode(); got != 0 {
		t.Fatalf("before expiry: code %d, want 0 (%v)", got, resp)
	}
	clk.Advance(time.Hour + time.Second)
	resp, err = client.Check(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	got := summarize(resp)
	if got.Code != 7 || got.HTTPStatus != 403 {
		t.Fatalf("after expiry: code %d status %d, want 7 and 403", got.Code, got.HTTPStatus)
	}
	if !strings.Contains(got.Body, "grant g-1h expired at 2026-03-01T13:00:00Z") {
		t.Errorf("body %s does not say the grant expired", got.Body)
	}
}

func TestCheckAcceptsAJWTSVIDBearerToken(t *testing.T) {
	ctx := context.Background()
	c := newCA(t)
	e, err := authz.New(authz.Config{Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, e, authz.Grant{ID: "g-scott", Caller: scott.String(), Target: payments.String(), Methods: []string{"GET"}})
	client := serve(t, "unix", extauthz.Config{Decider: e, JWT: bundleValidator{c}})

	token := func(aud spiffeid.ID) string {
		tok, _, err := c.SignJWTSVID(ctx, scott, []string{aud.String()}, 5*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tests := []struct {
		name       string
		req        request
		wantCode   int32
		wantCaller string
		wantReason string
	}{
		{
			name:       "a token for the target names the caller",
			req:        request{target: payments.String(), method: "GET", path: "/", headers: map[string]string{"authorization": "Bearer " + token(payments)}},
			wantCode:   0,
			wantCaller: scott.String(),
		},
		{
			name:       "the header name and scheme are case-insensitive",
			req:        request{target: payments.String(), method: "GET", path: "/", headers: map[string]string{"Authorization": "bearer " + token(payments)}},
			wantCode:   0,
			wantCaller: scott.String(),
		},
		{
			name:       "a token for another audience is denied",
			req:        request{target: payments.String(), method: "GET", path: "/", headers: map[string]string{"authorization": "Bearer " + token(ledger)}},
			wantCode:   7,
			wantReason: "invalid JWT-SVID for audience spiffe://example.org/ns/prod/sa/payments",
		},
		{
			name: "an unsigned token (alg none) with the right claims is denied",
			req: request{target: payments.String(), method: "GET", path: "/", headers: map[string]string{"authorization": "Bearer " + unsigned(t, map[string]any{
				"sub": scott.String(), "aud": []string{payments.String()}, "exp": time.Now().Add(time.Minute).Unix()})}},
			wantCode:   7,
			wantReason: "invalid JWT-SVID",
		},
		{
			name:       "a token re-signed with alg none keeps nothing of its signature's worth",
			req:        request{target: payments.String(), method: "GET", path: "/", headers: map[string]string{"authorization": "Bearer " + algNone(t, token(payments))}},
			wantCode:   7,
			wantReason: "invalid JWT-SVID",
		},
		{
			name:       "a malformed token is denied",
			req:        request{target: payments.String(), method: "GET", path: "/", headers: map[string]string{"authorization": "Bearer not.a.jwt"}},
			wantCode:   7,
			wantReason: "invalid JWT-SVID",
		},
		{
			name:       "a basic authorization header is no caller",
			req:        request{target: payments.String(), method: "GET", path: "/", headers: map[string]string{"authorization": "Basic c2NvdHQ6dGlnZXI="}},
			wantCode:   7,
			wantReason: "authorization header is not a bearer token",
		},
		{
			name:       "a peer certificate wins over a token",
			req:        request{caller: frontend.String(), target: payments.String(), method: "GET", path: "/", headers: map[string]string{"authorization": "Bearer " + token(payments)}},
			wantCode:   7,
			wantReason: "no grant allows spiffe://example.org/ns/prod/sa/frontend",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := client.Check(ctx, tt.req.proto())
			if err != nil {
				t.Fatal(err)
			}
			got := summarize(resp)
			if got.Code != tt.wantCode {
				t.Fatalf("code = %d, want %d (%s)", got.Code, tt.wantCode, got.Headers["x-kith-reason"])
			}
			if tt.wantCode == 0 {
				if got.Headers["x-kith-caller"] != tt.wantCaller {
					t.Errorf("x-kith-caller = %q, want %q", got.Headers["x-kith-caller"], tt.wantCaller)
				}
				return
			}
			checkDenial(t, got, tt.wantReason)
		})
	}

	t.Run("without a validator tokens are not accepted", func(t *testing.T) {
		client := serve(t, "unix", extauthz.Config{Decider: e})
		resp, err := client.Check(ctx, request{target: payments.String(), method: "GET", path: "/",
			headers: map[string]string{"authorization": "Bearer " + token(payments)}}.proto())
		if err != nil {
			t.Fatal(err)
		}
		checkDenial(t, summarize(resp), "bearer tokens are not accepted here")
	})
}

func TestCheckAddsPolicyHeaders(t *testing.T) {
	ctx := context.Background()
	e, err := authz.New(authz.Config{Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, e, authz.Grant{ID: "g-any", Caller: "spiffe://example.org/*", Target: payments.String()})
	if err := e.SetLabels(ctx, devTool, map[string]string{"env": "dev"}); err != nil {
		t.Fatal(err)
	}
	err = e.SetPolicy(ctx, "r1", map[string]string{"route.rego": `package kith.ext

headers["x-kith-caller-env"] := input.kith.caller.labels.env

http_status := 401 if input.kith.caller.id == ""
`})
	if err != nil {
		t.Fatal(err)
	}
	client := serve(t, "tcp", extauthz.Config{Decider: e})

	t.Run("a labelled caller gets the header", func(t *testing.T) {
		resp, err := client.Check(ctx, request{caller: devTool.String(), target: payments.String(), method: "GET", path: "/"}.proto())
		if err != nil {
			t.Fatal(err)
		}
		want := result{Code: 0, Headers: map[string]string{"x-kith-caller": devTool.String(), "x-kith-decision": "allow", "x-kith-caller-env": "dev"}}
		if diff := cmp.Diff(want, summarize(resp)); diff != "" {
			t.Errorf("response (-want +got):\n%s", diff)
		}
	})
	t.Run("an unlabelled caller cannot forge the header", func(t *testing.T) {
		resp, err := client.Check(ctx, request{caller: frontend.String(), target: payments.String(), method: "GET", path: "/",
			headers: map[string]string{"x-kith-caller-env": "dev"}}.proto())
		if err != nil {
			t.Fatal(err)
		}
		want := result{Code: 0, Headers: map[string]string{"x-kith-caller": frontend.String(), "x-kith-decision": "allow"}, Remove: []string{"x-kith-caller-env"}}
		if diff := cmp.Diff(want, summarize(resp)); diff != "" {
			t.Errorf("response (-want +got):\n%s", diff)
		}
	})
	t.Run("a denial has the policy's status", func(t *testing.T) {
		resp, err := client.Check(ctx, request{target: payments.String(), method: "GET", path: "/"}.proto())
		if err != nil {
			t.Fatal(err)
		}
		if got := summarize(resp); got.Code != 7 || got.HTTPStatus != 401 {
			t.Errorf("code %d status %d, want 7 and 401", got.Code, got.HTTPStatus)
		}
	})
}

// TestCheckRunsOPAEnvoyPolicies runs a policy written for OPA-Envoy
// unchanged and expects the decisions OPA-Envoy gives.
func TestCheckRunsOPAEnvoyPolicies(t *testing.T) {
	ctx := context.Background()
	e, err := authz.New(authz.Config{Decision: "envoy/authz/allow", Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	err = e.SetPolicy(ctx, "opa-envoy", map[string]string{"envoy.rego": `package envoy.authz

default allow := false

allow if {
	input.attributes.request.http.method == "GET"
	input.parsed_path[0] == "public"
}

allow if {
	input.attributes.request.http.method == "POST"
	input.parsed_path == ["api", "orders"]
	input.attributes.request.http.headers["x-dev"] == "true"
}

allow if {
	input.attributes.request.http.method == "PUT"
	input.parsed_query.lang == ["en"]
	input.attributes.source.address.socketAddress.address == "10.0.0.7"
}
`})
	if err != nil {
		t.Fatal(err)
	}
	client := serve(t, "unix", extauthz.Config{Decider: e})
	tests := []struct {
		name    string
		method  string
		path    string
		headers map[string]string
		want    bool
	}{
		{"GET under /public is allowed", "GET", "/public/logo.png", nil, true},
		{"GET elsewhere is denied", "GET", "/private/keys", nil, false},
		{"POST to /api/orders with x-dev is allowed", "POST", "/api/orders", map[string]string{"x-dev": "true"}, true},
		{"the query is not part of parsed_path", "POST", "/api/orders?debug=1", map[string]string{"x-dev": "true"}, true},
		{"POST to /api/orders without x-dev is denied", "POST", "/api/orders", nil, false},
		{"POST to /api/orders with another x-dev is denied", "POST", "/api/orders", map[string]string{"x-dev": "false"}, false},
		{"PUT with lang=en from the source address is allowed", "PUT", "/doc?lang=en", nil, true},
		{"PUT with another lang is denied", "PUT", "/doc?lang=fr", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := client.Check(ctx, request{caller: frontend.String(), target: payments.String(), method: tt.method, path: tt.path, headers: tt.headers}.proto())
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.GetStatus().GetCode() == 0; got != tt.want {
				t.Errorf("allowed = %v, want %v (%v)", got, tt.want, summarize(resp).Headers)
			}
		})
	}
}

// fakeDecider returns a fixed decision or error and records inputs.
type fakeDecider struct {
	mu  sync.Mutex
	d   authz.Decision
	err error
	ins []authz.Input
}

func (f *fakeDecider) Decide(_ context.Context, in authz.Input) (authz.Decision, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ins = append(f.ins, in)
	return f.d, f.err
}

type needingDecider struct {
	*fakeDecider
	needs bool
}

func (n needingDecider) NeedsAttributes() bool { return n.needs }

func TestCheckFailsClosed(t *testing.T) {
	ctx := context.Background()
	var outcomes []string
	f := &fakeDecider{d: authz.Decision{Allowed: true, PolicyAllowed: true}, err: errors.New("opa exploded")}
	client := serve(t, "unix", extauthz.Config{Decider: f, OnDecision: func(_, target, outcome string) { outcomes = append(outcomes, target+" "+outcome) }})
	resp, err := client.Check(ctx, request{caller: frontend.String(), target: payments.String(), method: "GET", path: "/"}.proto())
	if err != nil {
		t.Fatal(err)
	}
	got := summarize(resp)
	if got.Code != 7 || got.HTTPStatus != 403 {
		t.Fatalf("code %d status %d, want 7 and 403", got.Code, got.HTTPStatus)
	}
	checkDenial(t, got, "policy evaluation failed")
	if strings.Contains(got.Body, "exploded") {
		t.Errorf("body %s leaks the internal error", got.Body)
	}
	if diff := cmp.Diff([]string{payments.String() + " error"}, outcomes); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
}

func TestCheckSanitizesHeaders(t *testing.T) {
	ctx := context.Background()
	f := &fakeDecider{d: authz.Decision{HTTPStatus: 429, Reasons: []string{"line one\r\nx-injected: yes\x00"}}}
	client := serve(t, "unix", extauthz.Config{Decider: f})
	resp, err := client.Check(ctx, request{caller: frontend.String(), target: payments.String(), method: "GET", path: "/"}.proto())
	if err != nil {
		t.Fatal(err)
	}
	got := summarize(resp)
	if got.HTTPStatus != 429 {
		t.Errorf("status %d, want 429", got.HTTPStatus)
	}
	if want := "line one  x-injected: yes "; got.Headers["x-kith-reason"] != want {
		t.Errorf("x-kith-reason = %q, want %q", got.Headers["x-kith-reason"], want)
	}
}

func TestCheckBuildsAttributesOnlyWhenNeeded(t *testing.T) {
	ctx := context.Background()
	for _, needs := range []bool{true, false} {
		f := &fakeDecider{}
		s, err := extauthz.New(extauthz.Config{Decider: needingDecider{f, needs}, Logger: discard()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Check(ctx, request{caller: frontend.String(), target: payments.String(), method: "GET", path: "/a/b?x=1&x=2"}.proto()); err != nil {
			t.Fatal(err)
		}
		in := f.ins[0]
		if got := in.Attributes != nil; got != needs {
			t.Errorf("needs %v: attributes built = %v", needs, got)
		}
		// The query is passed raw: the engine parses it only for a policy that reads input.parsed_query.
		want := authz.Input{Caller: frontend, Target: payments, Method: "GET", Path: "/a/b", Query: "x=1&x=2",
			Headers: map[string]string{":authority": "payments", ":method": "GET", ":path": "/a/b?x=1&x=2"}}
		in.Attributes = nil
		if diff := cmp.Diff(want, in, cmp.AllowUnexported(spiffeid.ID{})); diff != "" {
			t.Errorf("input (-want +got):\n%s", diff)
		}
	}
}

func TestCheckToleratesEmptyRequests(t *testing.T) {
	ctx := context.Background()
	e, err := authz.New(authz.Config{Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	s, err := extauthz.New(extauthz.Config{Decider: e, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	for name, req := range map[string]*authv3.CheckRequest{
		"nil request":       nil,
		"no attributes":     {},
		"no http request":   {Attributes: &authv3.AttributeContext{Destination: &authv3.AttributeContext_Peer{Principal: payments.String()}}},
		"empty peers":       {Attributes: &authv3.AttributeContext{Source: &authv3.AttributeContext_Peer{}, Destination: &authv3.AttributeContext_Peer{}}},
		"huge headers":      hugeRequest(),
		"empty http fields": {Attributes: &authv3.AttributeContext{Destination: &authv3.AttributeContext_Peer{Principal: payments.String()}, Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{}}}},
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := s.Check(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetStatus().GetCode() != 7 {
				t.Errorf("code %d, want 7", resp.GetStatus().GetCode())
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]extauthz.Config{
		"no decider":             {},
		"negative sample allows": {Decider: &fakeDecider{}, SampleAllows: -1},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := extauthz.New(cfg); err == nil {
				t.Error("New succeeded, want an error")
			}
		})
	}
}

func hugeRequest() *authv3.CheckRequest {
	headers := map[string]string{"authorization": "Bearer " + strings.Repeat("a.", 1<<19)}
	for i := range 1000 {
		headers["x-kith-"+strings.Repeat("h", i)] = strings.Repeat("v", 1000)
	}
	return request{caller: strings.Repeat("spiffe://example.org/", 1<<14), target: payments.String(), method: "GET",
		path: "/" + strings.Repeat("a/", 1<<19), headers: headers}.proto()
}

func TestCheckTruncatesLoggedRequestStrings(t *testing.T) {
	ctx := context.Background()
	longTarget := "spiffe://example.org/" + strings.Repeat("t", 10_000)
	longCaller := "spiffe://example.org/" + strings.Repeat("c", 10_000)
	longPath := "/" + strings.Repeat("p", 10_000)
	tests := []struct {
		name    string
		decider *fakeDecider
		req     request
		message string
	}{
		{"a policy denial", &fakeDecider{d: authz.Decision{Reasons: []string{"no grant for " + longTarget}}},
			request{caller: longCaller, target: longTarget, method: "GET", path: longPath}, "ext_authz: deny"},
		{"a denial for a caller that is not a SPIFFE ID", &fakeDecider{},
			request{caller: "x" + longCaller, target: longTarget, method: "GET", path: longPath}, "ext_authz: deny"},
		{"a failed evaluation", &fakeDecider{err: errors.New("boom")},
			request{caller: longCaller, target: longTarget, method: strings.Repeat("M", 10_000), path: longPath}, "ext_authz: policy evaluation failed"},
		{"an audit-mode allow", &fakeDecider{d: authz.Decision{Allowed: true, Reasons: []string{strings.Repeat("r", 10_000)}}},
			request{caller: longCaller, target: longTarget, method: "GET", path: longPath}, "ext_authz: audit mode lets a denied request through"},
		{"a sampled allow", &fakeDecider{d: authz.Decision{Allowed: true, PolicyAllowed: true}},
			request{caller: longCaller, target: longTarget, method: "GET", path: longPath}, "ext_authz: allow (sampled)"},
	}
	for _, tt := range tests {
		t.Run("logs "+tt.name+" with request strings cut short", func(t *testing.T) {
			var out testutil.Buffer
			client := serve(t, "unix", extauthz.Config{Decider: tt.decider, SampleAllows: 1,
				Logger: slog.New(slog.NewJSONHandler(&out, nil))})
			if _, err := client.Check(ctx, tt.req.proto()); err != nil {
				t.Fatal(err)
			}
			var rec map[string]any
			for line := range strings.Lines(out.String()) {
				var r map[string]any
				if err := json.Unmarshal([]byte(line), &r); err != nil {
					t.Fatal(err)
				}
				if r["msg"] == tt.message {
					rec = r
				}
			}
			if rec == nil {
				t.Fatalf("no %q record in:\n%.2000s", tt.message, out.String())
			}
			if v, _ := rec["target"].(string); !strings.HasPrefix(v, "spiffe://example.org/ttt") {
				t.Errorf("target is logged as %.40q…, want the start of the target", v)
			}
			limits := map[string]int{"caller": 256, "target": 256, "method": 256, "path": 1024}
			for k, max := range limits {
				if v, _ := rec[k].(string); len(v) > max+len("…") {
					t.Errorf("%s is logged with %d bytes, want at most %d", k, len(v), max+len("…"))
				}
			}
			reasons, _ := rec["reasons"].([]any)
			for i, r := range reasons {
				if s, _ := r.(string); len(s) > 1024+len("…") {
					t.Errorf("reason %d is logged with %d bytes, want at most %d", i, len(s), 1024+len("…"))
				}
			}
		})
	}
}

// unsigned returns a JWT with header {"alg":"none"}, claims, and an empty signature.
func unsigned(t *testing.T, claims map[string]any) string {
	t.Helper()
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + base64.RawURLEncoding.EncodeToString(b) + "."
}

// algNone returns tok with its header's alg set to none and its signature dropped.
func algNone(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	h, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		t.Fatal(err)
	}
	var header map[string]any
	if err := json.Unmarshal(h, &header); err != nil {
		t.Fatal(err)
	}
	header["alg"] = "none"
	h, _ = json.Marshal(header)
	return base64.RawURLEncoding.EncodeToString(h) + "." + parts[1] + "."
}

func TestCheckMatchesHeadersAndPortsOfGrants(t *testing.T) {
	ctx := context.Background()
	e, err := authz.New(authz.Config{Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, e, authz.Grant{ID: "g-ios", Caller: frontend.String(), Target: payments.String(), PathRegex: []string{"/api/.*"},
		Headers: map[string]string{"user-agent": ".*iPhone.*"}, Ports: []uint32{8443}})
	s, err := extauthz.New(extauthz.Config{Decider: e, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		req   request
		port  uint32
		allow bool
	}{
		{"the header, path and port of the grant are allowed", request{caller: frontend.String(), target: payments.String(), method: "GET", path: "/api/x", headers: map[string]string{"user-agent": "Mozilla (iPhone)"}}, 8443, true},
		{"another user agent is denied", request{caller: frontend.String(), target: payments.String(), method: "GET", path: "/api/x", headers: map[string]string{"user-agent": "curl"}}, 8443, false},
		{"another port is denied", request{caller: frontend.String(), target: payments.String(), method: "GET", path: "/api/x", headers: map[string]string{"user-agent": "Mozilla (iPhone)"}}, 9000, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req.proto()
			req.Attributes.Destination.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: "10.0.0.9", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: tt.port}}}}
			resp, err := s.Check(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if got := summarize(resp).Code == 0; got != tt.allow {
				t.Errorf("allowed = %v, want %v (%+v)", got, tt.allow, summarize(resp))
			}
		})
	}
}
