package server

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kithid/kith/ca/keymanager"
	_ "github.com/kithid/kith/ca/keymanager/memory"
)

// The checkpoint itself is checked at start: deleting it, editing it or replacing it does not pass for a
// log that reached its head.
func TestAuditCheckpointTamperingIsSeenAtStart(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tamper  func(t *testing.T, path string)
		problem string
	}{
		{"an untouched checkpoint", func(*testing.T, string) {}, ""},
		{"a deleted checkpoint", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}, "is missing although the log has"},
		{"an edited checkpoint", func(t *testing.T, path string) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			b = regexp.MustCompile(`"count":\s*"`).ReplaceAll(b, []byte(`"count": "9`))
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "the signature does not verify"},
		{"a checkpoint from another server", func(t *testing.T, path string) {
			other, err := newDataDirServer(t, t.TempDir(), false)
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(other.anchor.path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "signed by another key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := newDataDirServer(t, dir, false)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.store.Audit(context.Background(), "test", "test.event", "x", nil); err != nil {
				t.Fatal(err)
			}
			s.store.Close()
			tc.tamper(t, filepath.Join(dir, checkpointFile))
			s, err = newDataDirServer(t, dir, false)
			if err != nil {
				t.Fatalf("New: %v (a damaged audit log warns, it does not refuse)", err)
			}
			ok, problem := s.anchor.intact()
			if tc.problem == "" && !ok {
				t.Errorf("intact = false (%s), want true", problem)
			}
			if tc.problem != "" && (ok || !strings.Contains(problem, tc.problem)) {
				t.Errorf("intact = %v, %q; want false with %q", ok, problem, tc.problem)
			}
		})
	}
}

// BenchmarkAuditCheckpoint is one checkpoint write: sign the head (ECDSA P-256) and write the file (temp
// file + rename, no fsync). While the server runs, one write covers the commits of checkpointDelay.
func BenchmarkAuditCheckpoint(b *testing.B) {
	keys, err := keymanager.New("memory", keymanager.Options{})
	if err != nil {
		b.Fatal(err)
	}
	a, err := newAuditAnchor(context.Background(), b.TempDir(), "example.org", keys, time.Now, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	hash := make([]byte, 32)
	var seq int64
	for b.Loop() {
		seq++
		a.record(seq, hash)
	}
	if a.Head().GetCount() != seq {
		b.Fatalf("head at %d, want %d", a.Head().GetCount(), seq)
	}
}
