package cli

import (
	"database/sql"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// httpGet returns the body of a GET on the server's HTTP listener.
func (s *testServer) httpGet(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(s.http + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// Rows removed from the end of the audit log leave a chain that verifies; they were "intact". The signed
// checkpoint outside the database shows them: at start (log line, metric, /readyz warning, an audit row),
// in kith audit verify, and against a head witnessed earlier with kith audit head.
func TestAuditRowsRemovedFromTheEndAreDetected(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	s.ok(t, "token", "create", "--name", "n1")
	for _, name := range []string{"a", "b", "c", "d"} {
		s.ok(t, "entry", "create", "--spiffe-id", "spiffe://example.org/"+name, "--node-selector", "join_token:name:n1", "--selector", "unix:uid:1")
	}
	if out := s.ok(t, "audit", "verify"); !strings.Contains(out, "reaches its signed checkpoint") {
		t.Fatalf("kith audit verify on an untouched log = %q, want it to reach its checkpoint", out)
	}
	witnessed := filepath.Join(t.TempDir(), "head.json")
	if err := os.WriteFile(witnessed, []byte(s.ok(t, "audit", "head", "-o", "json")), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := s.ok(t, "audit", "head"); !strings.Contains(out, "signature") || !strings.Contains(out, "audit-checkpoint") {
		t.Errorf("kith audit head = %q", out)
	}
	s.stop()

	db, err := sql.Open("sqlite", filepath.Join(dir, "kith.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"DROP TRIGGER audit_no_delete", "DELETE FROM audit WHERE seq > (SELECT max(seq) - 3 FROM audit)"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	s = startServer(t, dir)
	t.Run("kith audit verify exits 1 and says events were removed from the end", func(t *testing.T) {
		_, errs, code := s.kith(t, "audit", "verify")
		if code != 1 || !strings.Contains(errs, "removed from the end") {
			t.Errorf("kith audit verify: exit %d, stderr %q; want exit 1 naming the removed events", code, errs)
		}
	})
	t.Run("the metric kith_audit_chain_intact is 0", func(t *testing.T) {
		if _, body := s.httpGet(t, "/metrics"); !strings.Contains(body, "kith_audit_chain_intact 0") {
			t.Errorf("/metrics lacks kith_audit_chain_intact 0")
		}
	})
	t.Run("/readyz stays ready but warns", func(t *testing.T) {
		code, body := s.httpGet(t, "/readyz")
		if code != http.StatusOK || !strings.Contains(body, "warning: audit log: the log has") {
			t.Errorf("/readyz = %d %q", code, body)
		}
	})
	t.Run("the finding is in the log itself and the old checkpoint is kept", func(t *testing.T) {
		if out := s.ok(t, "audit", "list"); !strings.Contains(out, "audit.checkpoint.mismatch") {
			t.Errorf("no audit.checkpoint.mismatch row:\n%s", out)
		}
		if kept, _ := filepath.Glob(filepath.Join(dir, "audit-head.json.mismatch-*")); len(kept) != 1 {
			t.Errorf("kept checkpoints %v, want one", kept)
		}
	})
	s.stop()
	s = startServer(t, dir)
	t.Run("after another restart, the head witnessed before the removal still shows it", func(t *testing.T) {
		_, errs, code := s.kith(t, "audit", "verify", "--head", witnessed)
		if code != 1 || !strings.Contains(errs, "hash is not the recorded head's") && !strings.Contains(errs, "removed from the end") {
			t.Errorf("kith audit verify --head: exit %d, stderr %q; want exit 1", code, errs)
		}
	})
	t.Run("a witnessed head that was edited is refused", func(t *testing.T) {
		b, _ := os.ReadFile(witnessed)
		edited := regexp.MustCompile(`"count":\s*"`).ReplaceAllString(string(b), `"count": "1`)
		_, errs, code := s.kith(t, "audit", "verify", "--head", edited)
		if code != 1 || !strings.Contains(errs, "signature does not verify") {
			t.Errorf("kith audit verify --head (edited): exit %d, stderr %q", code, errs)
		}
	})
	t.Run("the metric is 1 again once the checkpoint matches", func(t *testing.T) {
		if _, body := s.httpGet(t, "/metrics"); !strings.Contains(body, "kith_audit_chain_intact 1") {
			t.Errorf("/metrics lacks kith_audit_chain_intact 1")
		}
	})
}
