package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// kith store check asks the running server, or with --data-dir reads a stopped server's database; damage
// found exits 1 and says to restore.
func TestStoreCheck(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	s.ok(t, "token", "create", "--name", "n1")
	for i := range 200 {
		s.ok(t, "entry", "create", "--spiffe-id", fmt.Sprintf("spiffe://example.org/w/%d", i), "--node-selector", "join_token:name:n1", "--selector", "unix:uid:1")
	}
	t.Run("through the running server, an intact store is reported intact", func(t *testing.T) {
		if out := s.ok(t, "store", "check"); !strings.Contains(out, "store intact (sqlite quick_check") {
			t.Errorf("kith store check = %q", out)
		}
	})
	s.stop()
	t.Run("offline, an intact store is reported intact", func(t *testing.T) {
		if out := s.ok(t, "store", "check", "--data-dir", dir); !strings.Contains(out, "store intact") {
			t.Errorf("kith store check --data-dir = %q", out)
		}
	})
	t.Run("offline, overwritten pages are found and the exit code is 1", func(t *testing.T) {
		f, err := os.OpenFile(filepath.Join(dir, "kith.db"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		junk := []byte(strings.Repeat("\xde\xad\xbe\xef", 1024))
		for _, page := range []int64{3, 5, 7} {
			if _, err := f.WriteAt(junk, page*4096); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
		_, errs, code := s.kith(t, "store", "check", "--data-dir", dir)
		if code != 1 || !strings.Contains(errs, "store damaged") || !strings.Contains(errs, "restore the database from a backup") {
			t.Errorf("kith store check --data-dir on a damaged store: exit %d, stderr %q", code, errs)
		}
	})
	t.Run("--data-dir and --db together are a usage error", func(t *testing.T) {
		if _, _, code := s.kith(t, "store", "check", "--data-dir", dir, "--db", "x.db"); code != 2 {
			t.Errorf("exit %d, want 2", code)
		}
	})
}
