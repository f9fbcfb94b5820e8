//go:build postgres

package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kithid/kith/internal/store"
	"github.com/kithid/kith/internal/store/postgres/pgtest"
	"github.com/kithid/kith/internal/store/storetest"
)

// cluster is the one PostgreSQL cluster the package's tests share; each test takes its own database.
var cluster *pgtest.Cluster

func TestMain(m *testing.M) {
	c, err := pgtest.New(pgtest.Options{TLS: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cluster = c
	code := m.Run()
	if err := c.Destroy(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

func open(t testing.TB, url string, now func() time.Time) *Store {
	t.Helper()
	s, err := Open(context.Background(), Config{URL: url, Now: now, MaxConns: 8})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestConformance runs the store contract's suite against PostgreSQL, with the audit tamper checks.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now func() time.Time) store.Backend {
		url := cluster.NewDatabase(t)
		return tamperable{Store: open(t, url, now), url: url}
	})
}

// tamperable lets the suite alter the audit log with raw SQL, as a database superuser could.
type tamperable struct {
	*Store
	url string
}

var _ storetest.AuditTamperer = tamperable{}

func (s tamperable) AlterAuditDetail(t *testing.T, seq int64, detail string) {
	s.raw(t, "UPDATE audit SET detail = $1 WHERE seq = $2", detail, seq)
}

func (s tamperable) DeleteAuditRow(t *testing.T, seq int64) {
	s.raw(t, "DELETE FROM audit WHERE seq = $1", seq)
}

// raw runs q on its own connection with the append-only triggers disabled.
func (s tamperable) raw(t *testing.T, q string, args ...any) {
	t.Helper()
	db, err := sql.Open("pgx", s.url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("ALTER TABLE audit DISABLE TRIGGER USER"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	if _, err := db.Exec("ALTER TABLE audit ENABLE TRIGGER USER"); err != nil {
		t.Fatal(err)
	}
}

func TestOpen(t *testing.T) {
	ctx := context.Background()
	t.Run("refuses an empty URL, naming the setting", func(t *testing.T) {
		_, err := Open(ctx, Config{})
		if err == nil || !strings.Contains(err.Error(), "store.url") {
			t.Fatalf("Open with no URL = %v, want an error naming store.url", err)
		}
	})
	t.Run("refuses a schema newer than this binary", func(t *testing.T) {
		url := cluster.NewDatabase(t)
		open(t, url, nil).Close()
		raw, err := sql.Open("pgx", url)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		if _, err := raw.Exec("UPDATE kith_schema SET version = 999"); err != nil {
			t.Fatal(err)
		}
		_, err = Open(ctx, Config{URL: url})
		if !errors.Is(err, store.ErrSchemaTooNew) {
			t.Fatalf("Open error = %v, want ErrSchemaTooNew", err)
		}
		want := fmt.Sprintf("has schema version 999 but this kith supports up to %d: upgrade kith", SchemaVersion())
		if !strings.HasSuffix(err.Error(), want) {
			t.Errorf("Open error = %q, want it to end in %q", err, want)
		}
	})
	t.Run("servers starting together migrate once", func(t *testing.T) {
		url := cluster.NewDatabase(t)
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 4 {
			wg.Go(func() {
				s, err := Open(ctx, Config{URL: url})
				if err == nil {
					s.Close()
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("concurrent Open: %v", err)
			}
		}
	})
	t.Run("connects over TLS, verifying the server's certificate as the URL says", func(t *testing.T) {
		plain := cluster.NewDatabase(t)
		db := plain[strings.LastIndex(plain, "/")+1 : strings.Index(plain, "?")]
		s := open(t, cluster.TLSURL(db), nil)
		var ssl bool
		if err := s.db.QueryRowContext(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil {
			t.Fatal(err)
		}
		if !ssl {
			t.Fatal("the connection is not TLS")
		}
		bad := strings.Replace(cluster.TLSURL(db), "localhost", "127.0.0.1", 1)
		bad = strings.Replace(bad, "sslrootcert=", "sslrootcert=/nonexistent", 1)
		if s, err := Open(ctx, Config{URL: bad}); err == nil {
			s.Close()
			t.Fatal("Open with an unusable root certificate succeeded")
		}
	})
}

// Several servers writing at once to one database make one audit chain and one sequence of revisions: the
// write lock serializes them, and no row is lost or forked.
func TestSeveralStoresOneChain(t *testing.T) {
	ctx := context.Background()
	url := cluster.NewDatabase(t)
	const servers, writers, each = 3, 4, 25
	stores := make([]*Store, servers)
	for i := range stores {
		stores[i] = open(t, url, nil)
	}
	var wg sync.WaitGroup
	errs := make(chan error, servers*writers*each)
	for i, s := range stores {
		for w := range writers {
			wg.Go(func() {
				for n := range each {
					e := storetest.Entry(t, (i*writers+w)*each+n)
					if _, err := s.CreateEntry(ctx, fmt.Sprintf("server-%d", i), e); err != nil {
						errs <- err
						return
					}
					if err := s.Audit(ctx, fmt.Sprintf("server-%d", i), "svid.mint.x509", e.SPIFFEID.String(), nil); err != nil {
						errs <- err
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("write: %v", err)
	}
	v := storetest.MustVerify(t, stores[0])
	if want := int64(servers * writers * each * 2); v.Count != want {
		t.Errorf("audit rows = %d, want %d", v.Count, want)
	}
	rev, err := stores[1].Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(servers * writers * each); rev != want {
		t.Errorf("revision = %d, want %d (one per entry)", rev, want)
	}
	changes, err := stores[2].ChangesSince(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range changes {
		if c.Revision != int64(i+1) {
			t.Fatalf("change %d has revision %d: revisions are not one per commit in order", i, c.Revision)
		}
	}
}

// A revision committed through one server reaches the watchers of another, and one committed while the
// other's listening connection was cut is caught up when it reconnects.
func TestWatchAcrossServers(t *testing.T) {
	ctx := context.Background()
	url := cluster.NewDatabase(t)
	a, b := open(t, url, nil), open(t, url, nil)
	ch, cancel := b.Watch()
	defer cancel()
	if _, err := a.CreateEntry(ctx, "test", storetest.Entry(t, 1)); err != nil {
		t.Fatal(err)
	}
	waitRevision(t, ch, 1)

	// Cut b's listening connection from the server side, then commit while it reconnects.
	raw, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateEntry(ctx, "test", storetest.Entry(t, 2)); err != nil {
		t.Fatal(err)
	}
	waitRevision(t, ch, 2)
}

func waitRevision(t *testing.T, ch <-chan int64, want int64) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case rev := <-ch:
			if rev >= want {
				return
			}
		case <-deadline:
			t.Fatalf("revision %d did not reach the other server's watcher within 10s", want)
		}
	}
}

// TestHistoryLost: the database goes back a revision, as after a restore from a backup or a failover to a
// replica that lacked the last commit. A server that had told its watchers the lost revision finds out on
// its next catch-up read and records it in the change feed (KindHistory, kept revision 1) with an audit
// event; one whose next write reuses the lost number finds out at that write; watchers are told the
// revisions the database is at, even lower ones, and then the record.
func TestHistoryLost(t *testing.T) {
	ctx := context.Background()
	url := cluster.NewDatabase(t)
	reader, err := Open(ctx, Config{URL: url, MaxConns: 2, CatchUpEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	writer := open(t, url, nil)
	ch, cancel := reader.Watch()
	defer cancel()
	for i := 1; i <= 2; i++ {
		if _, err := writer.CreateEntry(ctx, "test", storetest.Entry(t, i)); err != nil {
			t.Fatal(err)
		}
	}
	waitRevision(t, ch, 2)

	// Lose revision 2: the revision, its change and its entry, as a restore would.
	tamperable{writer, url}.raw(t, "DELETE FROM entries WHERE id = (SELECT object_id FROM changes WHERE revision = 2)")
	tamperable{writer, url}.raw(t, "DELETE FROM changes WHERE revision = 2")
	tamperable{writer, url}.raw(t, "UPDATE revision SET revision = 1 WHERE id = 1")

	history := func(from int64) []store.Change {
		t.Helper()
		var out []store.Change
		eventually(t, func() error {
			changes, err := reader.ChangesSince(ctx, from)
			if err != nil {
				return err
			}
			out = nil
			for _, c := range changes {
				if c.Kind == store.KindHistory {
					out = append(out, c)
				}
			}
			if len(out) == 0 {
				return fmt.Errorf("no history record since revision %d: %+v", from, changes)
			}
			return nil
		})
		return out
	}
	if got := history(1); got[0].ID != "1" || !store.HistoryLostBelow(got, 2) || store.HistoryLostBelow(got, 1) {
		t.Errorf("after the catch-up read: history records %+v, want kept revision 1", got)
	}
	events, err := reader.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(events, func(e store.AuditEvent) bool { return e.Action == "store.history_lost" && e.Target == "1" }) {
		t.Errorf("no store.history_lost audit event for kept revision 1 in %+v", events)
	}

	// Lose the newest revision again; the writer's next write reuses its number and finds out.
	rev, err := writer.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitRevision(t, ch, rev)
	tamperable{writer, url}.raw(t, "DELETE FROM changes WHERE revision = $1", rev)
	tamperable{writer, url}.raw(t, "UPDATE revision SET revision = $1 WHERE id = 1", rev-1)
	if _, err := writer.CreateEntry(ctx, "test", storetest.Entry(t, 3)); err != nil {
		t.Fatal(err)
	}
	if got := history(rev); !store.HistoryLostBelow(got, rev) {
		t.Errorf("after a write reused revision %d: history records %+v, want kept revision %d", rev, got, rev-1)
	}
}

func eventually(t *testing.T, f func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
