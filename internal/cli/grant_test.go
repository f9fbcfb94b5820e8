package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestGrantCanWhoRevoke(t *testing.T) {
	s := startServer(t, t.TempDir())
	for _, name := range []string{"frontend", "payments", "user/scott"} {
		s.ok(t, "entry", "create", "--spiffe-id", "spiffe://example.org/"+name, "--node-selector", "join_token:name:n1", "--selector", "unix:uid:1000")
	}
	can := func(args ...string) (string, int) {
		out, errs, code := s.kith(t, append([]string{"can"}, args...)...)
		return out + errs, code
	}

	s.ok(t, "grant", "frontend", "payments", "--method", "GET", "--path", "/api/*", "--reason", "checkout flow")
	if out, code := can("frontend", "payments", "--path", "/api/orders"); code != 0 || !strings.Contains(out, "ALLOWED") {
		t.Errorf("can frontend payments GET /api/orders: exit %d, %q; want allowed", code, out)
	}
	if out, code := can("frontend", "payments", "--method", "DELETE", "--path", "/api/orders"); code != 1 || !strings.Contains(out, "DENIED") {
		t.Errorf("can with a method the grant lacks: exit %d, %q; want denied (1)", code, out)
	}
	for _, tt := range []struct{ path, wantReason string }{
		{"/api/%2e%2e/admin", "does not allow path"},
		{"/api/..%2fadmin", "request path refused"},
	} {
		if out, code := can("frontend", "payments", "--path", tt.path); code != 1 || !strings.Contains(out, "DENIED") || !strings.Contains(out, tt.wantReason) {
			t.Errorf("can frontend payments GET %s: exit %d, %q; want denied (1) saying %q", tt.path, code, out, tt.wantReason)
		}
	}
	out, code := can("scott", "payments", "-o", "json")
	var verdict struct {
		Allowed bool     `json:"allowed"`
		Reasons []string `json:"reasons"`
		Mode    string   `json:"mode"`
	}
	if err := json.Unmarshal([]byte(out), &verdict); err != nil {
		t.Fatalf("can -o json = %q: %v", out, err)
	}
	if code != 1 || verdict.Allowed || verdict.Mode != "enforce" || len(verdict.Reasons) == 0 || !strings.Contains(verdict.Reasons[0], "no grant") {
		t.Errorf("scott before a grant: exit %d, %+v; want denied with a no-grant reason", code, verdict)
	}

	s.ok(t, "grant", "scott", "payments", "--for", "10m")
	if out, code := can("scott", "payments"); code != 0 {
		t.Errorf("scott after a grant: exit %d, %q", code, out)
	}
	who := s.ok(t, "who", "payments")
	for _, want := range []string{"spiffe://example.org/frontend", "spiffe://example.org/user/scott", "GET", "/api/*"} {
		if !strings.Contains(who, want) {
			t.Errorf("who payments = %q, want %q in it", who, want)
		}
	}
	if g := s.ok(t, "graph", "-o", "mermaid"); !strings.HasPrefix(g, "graph LR") || !strings.Contains(g, "spiffe://example.org/frontend") {
		t.Errorf("graph -o mermaid = %q", g)
	}
	if g := s.ok(t, "graph"); !strings.Contains(g, `"spiffe://example.org/frontend" -> "spiffe://example.org/payments"`) {
		t.Errorf("graph (dot) = %q", g)
	}

	s.ok(t, "revoke", "scott", "payments")
	if _, code := can("scott", "payments"); code != 1 {
		t.Errorf("scott after revoke: exit %d, want 1", code)
	}

	s.ok(t, "target", "mode", "payments", "audit")
	if out, code := can("scott", "payments"); code != 0 || !strings.Contains(out, "audit mode") {
		t.Errorf("audit mode: exit %d, %q; want allowed with the audit note", code, out)
	}
	s.ok(t, "target", "mode", "payments", "enforce")

	t.Run("errors exit 2", func(t *testing.T) {
		if out, code := can("nobody", "payments"); code != 2 || !strings.Contains(out, "no registered identity") {
			t.Errorf("unknown caller: exit %d, %q", code, out)
		}
	})
	t.Run("grants list shows source and reason", func(t *testing.T) {
		var list struct {
			Grants []struct {
				Caller, Target, Source, Reason string
			} `json:"grants"`
		}
		if err := json.Unmarshal([]byte(s.ok(t, "grants", "list", "--target", "payments", "-o", "json")), &list); err != nil {
			t.Fatal(err)
		}
		want := []struct{ Caller, Target, Source, Reason string }{{"spiffe://example.org/frontend", "spiffe://example.org/payments", "cli", "checkout flow"}}
		if diff := cmp.Diff(want, list.Grants); diff != "" {
			t.Errorf("grants (-want +got):\n%s", diff)
		}
	})
	t.Run("the audit log records grants and revokes", func(t *testing.T) {
		out := s.ok(t, "audit", "list")
		for _, want := range []string{"grant.create", "grant.revoke", "target.mode"} {
			if !strings.Contains(out, want) {
				t.Errorf("audit list lacks %s", want)
			}
		}
	})
	t.Run("a past expiry is refused", func(t *testing.T) {
		_, errs, code := s.kith(t, "grant", "scott", "payments", "--until", "2001-01-01T00:00:00Z")
		if code == 0 || !strings.Contains(errs, "in the past") {
			t.Errorf("exit %d, %q", code, errs)
		}
	})
}

func TestGrantPathRegexHeadersAndDenyRules(t *testing.T) {
	s := startServer(t, t.TempDir())
	for _, name := range []string{"frontend", "payments", "mobile"} {
		s.ok(t, "entry", "create", "--spiffe-id", "spiffe://example.org/"+name, "--node-selector", "join_token:name:n1", "--selector", "unix:uid:1000")
	}
	can := func(args ...string) (string, int) {
		out, errs, code := s.kith(t, append([]string{"can"}, args...)...)
		return out + errs, code
	}
	s.ok(t, "grant", "frontend", "payments", "--path-regex", "/api/v[0-9]+/", "--method", "GET")
	s.ok(t, "grant", "mobile", "payments", "--header", "User-Agent=.*iPhone.*", "--port", "8443")
	s.ok(t, "grant", "frontend", "payments", "--deny", "--path", "/api/v1/admin/*", "--reason", "no admin from the frontend")
	for _, tt := range []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{"a path matching the expression is allowed", []string{"frontend", "payments", "--path", "/api/v2/users"}, 0, "ALLOWED"},
		{"a path the expression does not match is denied", []string{"frontend", "payments", "--path", "/apix/v2"}, 1, "does not allow path /apix/v2"},
		{"the deny rule wins over the grant", []string{"frontend", "payments", "--path", "/api/v1/admin/users"}, 1, "denies spiffe://example.org/frontend → spiffe://example.org/payments any method /api/v1/admin/*"},
		{"the header and port of the grant are allowed", []string{"mobile", "payments", "--header", "user-agent=Mozilla (iPhone)", "--port", "8443"}, 0, "ALLOWED"},
		{"another header is denied", []string{"mobile", "payments", "--header", "user-agent=curl", "--port", "8443"}, 1, "header user-agent does not match"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, code := can(tt.args...)
			if code != tt.wantCode || !strings.Contains(out, tt.want) {
				t.Errorf("kith can %s: exit %d, %q; want exit %d saying %q", strings.Join(tt.args, " "), code, out, tt.wantCode, tt.want)
			}
		})
	}
	list := s.ok(t, "grants", "list", "--caller", "frontend")
	for _, want := range []string{"(deny)", "~/api/v[0-9]+/"} {
		if !strings.Contains(list, want) {
			t.Errorf("grants list = %q, want %q in it", list, want)
		}
	}
	if out := s.ok(t, "grants", "list", "--source", "smi:"); strings.Contains(out, "spiffe://") {
		t.Errorf("grants list --source smi: lists CLI grants: %q", out)
	}
	if out := s.ok(t, "grants", "list", "--source", "cli"); strings.Count(out, "spiffe://example.org/payments") != 3 {
		t.Errorf("grants list --source cli = %q, want the 3 grants", out)
	}
	if _, errs, code := s.kith(t, "grant", "frontend", "payments", "--header", "novalue"); code != 2 || !strings.Contains(errs, "want NAME=VALUE") {
		t.Errorf("grant --header novalue: exit %d, %q; want a usage error", code, errs)
	}
	if _, errs, code := s.kith(t, "grant", "frontend", "payments", "--path-regex", "(x"); code == 0 || !strings.Contains(errs, "not an RE2 expression") {
		t.Errorf("grant --path-regex (x: exit %d, %q; want refused", code, errs)
	}
}
