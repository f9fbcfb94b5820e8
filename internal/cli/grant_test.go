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
