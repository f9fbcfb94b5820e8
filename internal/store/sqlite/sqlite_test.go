package sqlite

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/internal/store"
	"github.com/kithid/kith/internal/store/storetest"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)

func openAt(t testing.TB, path string) *Store {
	t.Helper()
	c := storetest.NewClock(t0)
	s, err := Open(context.Background(), Config{Path: path, Now: c.Now})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openTemp(t testing.TB) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data", "kith.db")
	return openAt(t, path), path
}

// The conformance suite's helpers serve the SQLite-only tests too.
var (
	testEntry  = storetest.Entry
	mustVerify = storetest.MustVerify
	idComparer = storetest.IDComparer
)

// TestConformance runs the store contract's suite against SQLite, with the audit tamper checks.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now func() time.Time) store.Backend {
		path := filepath.Join(t.TempDir(), "kith.db")
		s, err := Open(context.Background(), Config{Path: path, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return tamperable{Store: s, path: path}
	})
}

// tamperable lets the suite alter the audit log with raw SQL, as an attacker with the file would.
type tamperable struct {
	*Store
	path string
}

var _ storetest.AuditTamperer = tamperable{}

func (s tamperable) AlterAuditDetail(t *testing.T, seq int64, detail string) {
	s.raw(t, "UPDATE audit SET detail = ? WHERE seq = ?", detail, seq)
}

func (s tamperable) DeleteAuditRow(t *testing.T, seq int64) {
	s.raw(t, "DELETE FROM audit WHERE seq = ?", seq)
}

// raw runs q on its own connection with the append-only triggers dropped.
func (s tamperable) raw(t *testing.T, q string, args ...any) {
	t.Helper()
	db, err := sql.Open("sqlite", s.path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, stmt := range []string{"DROP TRIGGER IF EXISTS audit_no_update", "DROP TRIGGER IF EXISTS audit_no_delete"} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func TestOpen(t *testing.T) {
	t.Run("creates the directory 0700 and the files 0600", func(t *testing.T) {
		s, path := openTemp(t)
		if _, err := s.CreateEntry(context.Background(), "test", testEntry(t, 1)); err != nil {
			t.Fatal(err)
		}
		for p, want := range map[string]os.FileMode{filepath.Dir(path): 0o700 | os.ModeDir, path: 0o600, path + "-wal": 0o600} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != want {
				t.Errorf("mode of %s = %v, want %v", p, fi.Mode(), want)
			}
		}
	})
	t.Run("refuses an empty path", func(t *testing.T) {
		if _, err := Open(context.Background(), Config{}); err == nil {
			t.Fatal("Open with no path succeeded")
		}
	})
	t.Run("refuses a schema newer than this binary", func(t *testing.T) {
		s, path := openTemp(t)
		s.Close()
		raw, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := raw.Exec("PRAGMA user_version = 999"); err != nil {
			t.Fatal(err)
		}
		raw.Close()
		_, err = Open(context.Background(), Config{Path: path})
		if !errors.Is(err, store.ErrSchemaTooNew) {
			t.Fatalf("Open error = %v, want ErrSchemaTooNew", err)
		}
		want := fmt.Sprintf("store at %s has schema version 999 but this kith supports up to %d: upgrade kith", path, SchemaVersion())
		if err.Error() != want {
			t.Errorf("Open error = %q, want %q", err, want)
		}
	})
}

// CreateEntries takes a bulk registration in one call (the rest of its contract is in storetest; its speed
// is measured by bench/scale and recorded in docs/benchmarks.md, not timed here).
func TestCreateEntries(t *testing.T) {
	ctx := context.Background()

	t.Run("10000 entries in one call", func(t *testing.T) {
		s, _ := openTemp(t)
		es := make([]store.Entry, 10000)
		for i := range es {
			es[i] = testEntry(t, i)
		}
		got, err := s.CreateEntries(ctx, "test", es)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(es) {
			t.Errorf("CreateEntries(10000) returned %d entries", len(got))
		}
		mustVerify(t, s)
	})
}

func testAuthorities() []ca.Authority {
	return []ca.Authority{
		{
			ID: "root1", Kind: ca.KindX509Root, State: ca.StateActive, KeyID: "k-root1", CertDER: []byte{1, 2, 3},
			NotBefore: t0, NotAfter: t0.AddDate(1, 0, 0), CreatedAt: t0, ActivatedAt: t0,
		},
		{
			ID: "int1", Kind: ca.KindX509Intermediate, State: ca.StatePrepared, KeyID: "k-int1", CertDER: []byte{4, 5},
			ParentID: "root1", NotBefore: t0, NotAfter: t0.AddDate(0, 0, 7), CreatedAt: t0.Add(time.Second),
		},
		{
			ID: "jwt1", Kind: ca.KindJWT, State: ca.StateActive, KeyID: "k-jwt1", PublicKey: []byte{9},
			NotBefore: t0, NotAfter: t0.AddDate(0, 0, 7), CreatedAt: t0.Add(2 * time.Second), ActivatedAt: t0,
		},
	}
}

func TestReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "kith.db")
	s, err := Open(ctx, Config{Path: path, Now: storetest.NewClock(t0).Now})
	if err != nil {
		t.Fatal(err)
	}
	e, err := s.CreateEntry(ctx, "test", testEntry(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutAuthorities(ctx, "system", "ca.init", testAuthorities()); err != nil {
		t.Fatal(err)
	}
	before := mustVerify(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openAt(t, path)
	got, err := s.GetEntry(ctx, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(e, got, idComparer); diff != "" {
		t.Errorf("entry after reopen (-want +got):\n%s", diff)
	}
	auths, err := s.ListAuthorities(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(testAuthorities(), auths); diff != "" {
		t.Errorf("authorities after reopen (-want +got):\n%s", diff)
	}
	after := mustVerify(t, s)
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("audit verification after reopen (-want +got):\n%s", diff)
	}

	t.Run("the chain continues after reopening", func(t *testing.T) {
		if _, err := s.CreateEntry(ctx, "test", testEntry(t, 2)); err != nil {
			t.Fatal(err)
		}
		v := mustVerify(t, s)
		if v.Count != 3 {
			t.Errorf("VerifyAudit count = %d, want 3", v.Count)
		}
		rev, _ := s.Revision(ctx)
		if rev != 3 {
			t.Errorf("Revision = %d, want 3", rev)
		}
	})
}

func TestAuditTamper(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	for i := range 4 {
		if _, err := s.CreateEntry(ctx, "test", testEntry(t, i)); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()

	t.Run("the triggers refuse update and delete", func(t *testing.T) {
		for _, q := range []string{"UPDATE audit SET actor = 'mallory' WHERE seq = 2", "DELETE FROM audit WHERE seq = 4"} {
			if _, err := raw.Exec(q); err == nil || !strings.Contains(err.Error(), "append-only") {
				t.Errorf("%s: error = %v, want append-only refusal", q, err)
			}
		}
		mustVerify(t, s)
	})

	for _, tc := range []struct {
		name     string
		sql      string
		brokenAt int64
		problem  string
	}{
		{"an altered detail breaks the chain at that row", "UPDATE audit SET detail = '{}' WHERE seq = 2", 2, "hash does not match"},
		{"an altered revision breaks the chain at that row", "UPDATE audit SET revision = 9 WHERE seq = 3", 3, "hash does not match"},
		{"a deleted row breaks the chain at the next row", "DELETE FROM audit WHERE seq = 2", 3, "row 2 is missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, path := openTemp(t)
			for i := range 4 {
				if _, err := s.CreateEntry(ctx, "test", testEntry(t, i)); err != nil {
					t.Fatal(err)
				}
			}
			raw, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			for _, q := range []string{"DROP TRIGGER audit_no_update", "DROP TRIGGER audit_no_delete", tc.sql} {
				if _, err := raw.Exec(q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			v, err := s.VerifyAudit(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if v.OK || v.BrokenAt != tc.brokenAt || !strings.Contains(v.Problem, tc.problem) {
				t.Errorf("VerifyAudit = OK %v, BrokenAt %d, Problem %q; want broken at %d with %q", v.OK, v.BrokenAt, v.Problem, tc.brokenAt, tc.problem)
			}
		})
	}
}

func BenchmarkCreateEntries10k(b *testing.B) {
	ctx := context.Background()
	es := make([]store.Entry, 10000)
	for i := range es {
		es[i] = testEntry(b, i)
	}
	for b.Loop() {
		b.StopTimer()
		s, _ := openTemp(b)
		b.StartTimer()
		if _, err := s.CreateEntries(ctx, "bench", es); err != nil {
			b.Fatal(err)
		}
	}
}

// A version 3 store keeps its join tokens across the upgrade that lets token names be given again.
func TestUpgradeFromVersion3KeepsJoinTokens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kith.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[:3] {
		if _, err := db.Exec(m.SQL); err != nil {
			t.Fatalf("%s: %v", m.Name, err)
		}
	}
	h := sha256.Sum256([]byte("secret"))
	if _, err := db.Exec("PRAGMA user_version = 3"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO join_tokens (id, name, hash, created_at, expires_at, used_at, used_by) VALUES ('t1', 'node1', ?, ?, ?, NULL, '')",
		h[:], t0.UTC().Format(time.RFC3339Nano), t0.Add(time.Hour).UTC().Format(time.RFC3339Nano)); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s := openAt(t, path)
	tokens, err := s.ListJoinTokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(tokens) != 1 || tokens[0].ID != "t1" || tokens[0].Name != "node1" || !tokens[0].ExpiresAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("tokens after the upgrade = %+v, want t1 named node1", tokens)
	}
	if _, err := s.LookupJoinToken(context.Background(), h[:]); err != nil {
		t.Errorf("the upgraded token's secret no longer finds it: %v", err)
	}
}

// BenchmarkAuditedWrite is one change transaction with its audit row (CreateEntry), one writer, with the
// writer's PRAGMA synchronous NORMAL (the old setting) and FULL (now). TMPDIR must be on a real disk: on
// tmpfs a sync costs nothing.
func BenchmarkAuditedWrite(b *testing.B) {
	for _, bc := range []struct {
		name string
		cfg  Config
	}{
		{"synchronous=NORMAL", Config{synchronous: "NORMAL"}},
		{"synchronous=FULL", Config{}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := bc.cfg
			cfg.Path = filepath.Join(b.TempDir(), "kith.db")
			s, err := Open(context.Background(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			i := 0
			for b.Loop() {
				if _, err := s.CreateEntry(context.Background(), "bench", testEntry(b, i)); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// Every commit syncs the WAL (synchronous=FULL = 2): an acknowledged write, and the audit row in its
// transaction, survives power loss. NORMAL (1) synced only at checkpoints.
func TestWritesAreDurableAcrossPowerLoss(t *testing.T) {
	s, _ := openTemp(t)
	var mode int
	if err := s.writer.QueryRowContext(context.Background(), "PRAGMA synchronous").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(2, mode); diff != "" {
		t.Errorf("the writer's PRAGMA synchronous (-want FULL +got):\n%s", diff)
	}
}

// A version 7 store's entries are found by their short names after the upgrade that indexes them.
func TestUpgradeFromVersion7IndexesEntryNames(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kith.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[:7] {
		if _, err := db.Exec(m.SQL); err != nil {
			t.Fatalf("%s: %v", m.Name, err)
		}
	}
	if _, err := db.Exec("PRAGMA user_version = 7"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO entries (id, spiffe_id, parent_id, node_selectors, selectors, dedup_key, dns_names, labels, revision)
		VALUES ('e1', 'spiffe://kith.test/ns/prod/sa/payments', '', '[]', '[]', 'k1', '[]', '{}', 1)`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s := openAt(t, path)
	for _, name := range []string{"payments", "sa/payments"} {
		got, err := s.ListEntries(context.Background(), store.EntryFilter{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].ID != "e1" {
			t.Errorf("ListEntries(Name %q) after the upgrade = %+v, want e1", name, got)
		}
	}
}
