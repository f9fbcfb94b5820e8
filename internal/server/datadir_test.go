package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/internal/config"
	"github.com/kithid/kith/internal/store"
)

// newDataDirServer opens a server on dir (not run: New is where the data dir is checked).
func newDataDirServer(t *testing.T, dir string, reinit bool) (*Server, error) {
	t.Helper()
	c := &config.Server{DataDir: dir}
	if err := c.Finish(); err != nil {
		t.Fatal(err)
	}
	s, err := New(context.Background(), Config{Config: c, Reinit: reinit})
	if err == nil {
		t.Cleanup(func() { s.store.Close() })
	}
	return s, err
}

func rootFingerprints(s *Server) []string {
	var out []string
	for _, a := range s.ca.Authorities() {
		if a.Kind == ca.KindX509Root {
			sum := sha256.Sum256(a.CertDER)
			out = append(out, hex.EncodeToString(sum[:]))
		}
	}
	return out
}

// An initialised data dir whose database is lost is refused instead of becoming a new install with a new
// CA; --reinit starts over on purpose, keeps the old files and records the old root in the new log.
func TestALostDatabaseIsRefusedNotReplacedByANewCA(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string)
		state  string
	}{
		{"a deleted database", func(t *testing.T, dir string) {
			for _, f := range []string{"kith.db", "kith.db-wal", "kith.db-shm"} {
				os.Remove(filepath.Join(dir, f))
			}
		}, "is missing"},
		{"a database truncated to 0 bytes", func(t *testing.T, dir string) {
			for _, f := range []string{"kith.db-wal", "kith.db-shm"} {
				os.Remove(filepath.Join(dir, f))
			}
			if err := os.Truncate(filepath.Join(dir, "kith.db"), 0); err != nil {
				t.Fatal(err)
			}
		}, "is empty (0 bytes)"},
		{"a database replaced by a new one", func(t *testing.T, dir string) {
			for _, f := range []string{"kith.db-wal", "kith.db-shm"} {
				os.Remove(filepath.Join(dir, f))
			}
			// A fresh schema with no CA in it: what the server would have created itself.
			empty := filepath.Join(t.TempDir(), "kith.db")
			st, err := openStore(context.Background(), &config.Server{Store: config.Store{DSN: empty}}, Config{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			st.Close()
			b, err := os.ReadFile(empty)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "kith.db"), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "is a new database without a CA"},
		{"a deleted database and no marker (a data dir from before the marker)", func(t *testing.T, dir string) {
			for _, f := range []string{"kith.db", "kith.db-wal", "kith.db-shm", markerFile} {
				os.Remove(filepath.Join(dir, f))
			}
		}, "is missing"},
	} {
		t.Run(tc.name+" is refused, and --reinit starts over keeping the old files", func(t *testing.T) {
			dir := t.TempDir()
			first, err := newDataDirServer(t, dir, false)
			if err != nil {
				t.Fatal(err)
			}
			oldRoots := rootFingerprints(first)
			first.store.Close()
			tc.damage(t, dir)

			_, err = newDataDirServer(t, dir, false)
			if err == nil {
				t.Fatal("New on an initialised data dir with a lost database started, want a refusal")
			}
			for _, want := range []string{"refusing to start", tc.state, "Restore kith.db from a backup", "kith server --reinit"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("refusal %q does not say %q", err, want)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "kith.db")); tc.state == "is missing" && err == nil {
				t.Error("the refusal created a new kith.db")
			}

			s, err := newDataDirServer(t, dir, true)
			if err != nil {
				t.Fatalf("New with --reinit: %v", err)
			}
			if cmp.Equal(rootFingerprints(s), oldRoots) {
				t.Error("--reinit kept the old root")
			}
			events, err := s.store.ListAudit(context.Background(), store.AuditFilter{})
			if err != nil {
				t.Fatal(err)
			}
			var rec reinitRecord
			for _, ev := range events {
				if ev.Action == "server.reinit" {
					if err := json.Unmarshal([]byte(ev.Detail), &rec); err != nil {
						t.Fatal(err)
					}
				}
			}
			wantRoots := oldRoots
			if strings.Contains(tc.name, "no marker") {
				wantRoots = []string{}
			}
			if diff := cmp.Diff(wantRoots, rec.OldRootSHA256); diff != "" {
				t.Errorf("server.reinit audit row's old roots (-want +got):\n%s", diff)
			}
			kept, err := os.ReadDir(filepath.Join(rec.MovedTo, "keys"))
			if err != nil || len(kept) == 0 {
				t.Errorf("old keys not kept in %s: %v %v", rec.MovedTo, kept, err)
			}
		})
	}
}

// --reinit is not a way around an intact database.
func TestReinitRefusesAnIntactDatabase(t *testing.T) {
	dir := t.TempDir()
	s, err := newDataDirServer(t, dir, false)
	if err != nil {
		t.Fatal(err)
	}
	s.store.Close()
	if _, err := newDataDirServer(t, dir, true); err == nil || !strings.Contains(err.Error(), "is intact") {
		t.Fatalf("--reinit on an intact database = %v, want a refusal", err)
	}
	if _, err := newDataDirServer(t, dir, false); err != nil {
		t.Fatalf("a normal restart after the refused --reinit: %v", err)
	}
}
