// Package postgres is Kith's store on PostgreSQL (github.com/jackc/pgx/v5), for several servers sharing one
// database: registration entries, agents, join tokens, grants, policy, CA authorities and the hash-chained
// audit log, with the same contract as the embedded SQLite store (it passes the same conformance suite,
// storetest).
//
// Every write transaction first takes one transaction-scoped advisory lock (pg_advisory_xact_lock), held
// until it commits: writes from every server sharing the database are serialized, so the store-wide
// revision is committed in order, and the audit log stays one hash chain however many servers append to it
// (audit.prev_hash is also UNIQUE: a fork could not be stored). A transaction that changed something sends
// its revision with pg_notify, delivered at commit; each Store LISTENs on its own connection and tells its
// watchers, and on every (re)connection it reads the revision again, so that a notification lost while the
// connection or the database was down is caught up.
//
// The schema is created and upgraded by embedded migrations (the PostgreSQL ports of the SQLite ones, with
// the same columns), recorded in table kith_schema; a database written by a newer Kith is refused with
// store.ErrSchemaTooNew.
package postgres

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/kithid/kith/internal/store"
	"github.com/kithid/kith/internal/store/sqlstore"
)

var _ store.Backend = (*Store)(nil)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Advisory lock keys (one 64-bit space per database): the write lock every change transaction holds, and
// the lock migrations hold.
const (
	writeLockKey   int64 = 0x6b697468_0001 // "kith" 1
	migrateLockKey int64 = 0x6b697468_0002
)

// DefaultChannel is the channel revisions are notified on.
const DefaultChannel = "kith_revision"

// Config configures Open.
type Config struct {
	// URL is the database's connection URL: postgres://user:password@host:port/db?sslmode=verify-full&...
	// (or a keyword/value DSN). TLS to the database is set there, as libpq does: sslmode, sslrootcert,
	// sslcert, sslkey. Required.
	URL string
	// MaxConns is the size of the connection pool, not counting the one connection that listens for
	// revisions. Zero: 10.
	MaxConns int
	Now      func() time.Time // zero means time.Now
	Logger   *slog.Logger     // zero means discard
	// OnAuditHead is called after each commit of this Store that appended audit rows, with the new head (the
	// last seq and its hash); calls come in commit order. Zero: nothing is called.
	OnAuditHead func(seq int64, hash []byte)
	// Channel is the LISTEN/NOTIFY channel for revisions. Zero: DefaultChannel.
	Channel string
	// CatchUpEvery is how often the listener reads the revision even without a notification, a safety net
	// behind the catch-up on every reconnection. Zero: 5 s.
	CatchUpEvery time.Duration
}

// Store is the PostgreSQL store. It is safe for concurrent use, by any number of Stores (servers) on the
// same database.
type Store struct {
	*sqlstore.Store
	now     func() time.Time
	onHead  func(seq int64, hash []byte)
	log     *slog.Logger
	db      *sql.DB
	reader  rdb
	channel string
	connCfg *pgx.ConnConfig

	// wlock serializes this process's writes before they queue on the database lock, so that notifications
	// to local watchers go out in commit order.
	wlock chan struct{}

	watchers sqlstore.Watchers
	wmu      sync.Mutex // guards seen, and orders what is told to watchers
	seen     int64      // the newest revision told to watchers

	amu       sync.Mutex // guards aqueue, aflushing: the Audit calls waiting for a group commit
	aqueue    []*auditReq
	aflushing bool

	stop     context.CancelFunc
	listened chan struct{} // closed when the listener has returned
}

// ParseURL reports whether a store URL names PostgreSQL (postgres:// or postgresql://).
func ParseURL(u string) bool {
	return strings.HasPrefix(u, "postgres://") || strings.HasPrefix(u, "postgresql://")
}

// Redact returns u without its password, for logs and errors.
func Redact(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.User == nil {
		return u
	}
	if _, ok := p.User.Password(); ok {
		p.User = url.UserPassword(p.User.Username(), "xxxxx")
	}
	return p.String()
}

// Open connects to the database at cfg.URL, brings its schema up to date and starts listening for the
// revisions other servers commit.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.URL == "" {
		return nil, errors.New("open postgres store: no database URL configured (store.url or KITH_STORE_URL)")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 10
	}
	if cfg.Channel == "" {
		cfg.Channel = DefaultChannel
	}
	if cfg.CatchUpEvery <= 0 {
		cfg.CatchUpEvery = 5 * time.Second
	}
	where := Redact(cfg.URL)
	connCfg, err := pgx.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("open postgres store %s: the URL does not parse (%v): write it as postgres://user:password@host:5432/db?sslmode=verify-full", where, err)
	}
	db := stdlib.OpenDB(*connCfg)
	db.SetMaxOpenConns(cfg.MaxConns)
	db.SetMaxIdleConns(cfg.MaxConns)
	db.SetConnMaxIdleTime(5 * time.Minute)

	version, err := migrate(ctx, db, where, cfg.Logger)
	if err != nil {
		db.Close()
		return nil, err
	}
	lctx, stop := context.WithCancel(context.Background())
	s := &Store{
		now:      cfg.Now,
		onHead:   cfg.OnAuditHead,
		log:      cfg.Logger,
		db:       db,
		reader:   rdb{db},
		channel:  cfg.Channel,
		connCfg:  connCfg,
		wlock:    make(chan struct{}, 1),
		stop:     stop,
		listened: make(chan struct{}),
	}
	s.Store = sqlstore.New(s.reader, s.write, dialect)
	rev, err := s.Revision(ctx)
	if err != nil {
		stop()
		db.Close()
		return nil, fmt.Errorf("open postgres store %s: %w", where, err)
	}
	s.seen = rev
	go s.listen(lctx, connCfg, cfg.CatchUpEvery)
	s.log.Info("store opened", "url", where, "schema_version", version, "revision", rev)
	return s, nil
}

// rdb and rtx rewrite the SQLite-style ? placeholders of the store's queries to PostgreSQL's $n.
type rdb struct{ *sql.DB }

func (d rdb) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return d.DB.QueryContext(ctx, rebind(q), args...)
}

func (d rdb) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return d.DB.QueryRowContext(ctx, rebind(q), args...)
}

type rtx struct{ *sql.Tx }

func (t rtx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return t.Tx.QueryContext(ctx, rebind(q), args...)
}

func (t rtx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return t.Tx.QueryRowContext(ctx, rebind(q), args...)
}

func (t rtx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return t.Tx.ExecContext(ctx, rebind(q), args...)
}

var rebound sync.Map // query → rewritten query

// rebind numbers the ? placeholders of q ($1, $2, ...). The store's queries hold no ? in literals.
func rebind(q string) string {
	if v, ok := rebound.Load(q); ok {
		return v.(string)
	}
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	out := b.String()
	rebound.Store(q, out)
	return out
}

func migrations() ([]sqlstore.Migration, error) {
	return sqlstore.Migrations(migrationFS, "migrations")
}

// SchemaVersion is the newest schema version this binary knows.
func SchemaVersion() int {
	ms, _ := migrations()
	return len(ms)
}

// migrate applies the migrations the database lacks, each in its own transaction with its version bump,
// under an advisory lock so that servers starting together migrate once.
func migrate(ctx context.Context, db *sql.DB, where string, log *slog.Logger) (int, error) {
	ms, err := migrations()
	if err != nil {
		return 0, fmt.Errorf("read embedded migrations: %w", err)
	}
	for {
		applied, version, err := migrateStep(ctx, db, ms)
		if err != nil {
			if errors.Is(err, store.ErrSchemaTooNew) {
				return 0, &sqlstore.SchemaTooNewError{Where: where, Have: version, Support: len(ms)}
			}
			return 0, fmt.Errorf("migrate postgres store %s to schema version %d: %w", where, version+1, err)
		}
		if !applied {
			return version, nil
		}
		log.Info("store schema migrated", "url", where, "schema_version", version)
	}
}

// migrateStep applies the next migration, if any, and returns the version the database is at.
func migrateStep(ctx context.Context, db *sql.DB, ms []sqlstore.Migration) (bool, int, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, 0, fmt.Errorf("connect: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", migrateLockKey); err != nil {
		return false, 0, err
	}
	if _, err := tx.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS kith_schema (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)"); err != nil {
		return false, 0, err
	}
	var version int
	switch err := tx.QueryRowContext(ctx, "SELECT version FROM kith_schema WHERE id = 1").Scan(&version); {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := tx.ExecContext(ctx, "INSERT INTO kith_schema (id, version) VALUES (1, 0)"); err != nil {
			return false, 0, err
		}
	case err != nil:
		return false, 0, err
	}
	if version > len(ms) {
		return false, version, store.ErrSchemaTooNew
	}
	if version == len(ms) {
		return false, version, tx.Commit()
	}
	m := ms[version]
	if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
		return false, version, fmt.Errorf("%s: %w", m.Name, err)
	}
	if _, err := tx.ExecContext(ctx, "UPDATE kith_schema SET version = $1 WHERE id = 1", version+1); err != nil {
		return false, version, err
	}
	if err := tx.Commit(); err != nil {
		return false, version, err
	}
	return true, version + 1, nil
}

// Close stops listening, closes every watch channel and the connection pool.
func (s *Store) Close() error {
	if s.watchers.Close() {
		return nil
	}
	s.stop()
	<-s.listened
	return s.db.Close()
}

// Watch subscribes to committed revisions, this Store's and every other server's on the same database.
// The channel holds one value and coalesces: a slow reader finds only the newest revision waiting. The
// returned func unsubscribes and closes the channel; Close closes every channel too.
func (s *Store) Watch() (<-chan int64, func()) { return s.watchers.Watch() }

// advance tells watchers rev if it is newer than any revision told before.
func (s *Store) advance(rev int64) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if rev <= s.seen {
		return
	}
	s.tell(rev)
}

// committed tells watchers the revision this server's own write committed. before is the newest revision
// told when the write took the database-wide write lock: every revision told by then was committed before
// it, so a write that commits one at or below it means the database lost history.
func (s *Store) committed(rev, before int64) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if rev <= before {
		s.historyLost(rev - 1)
		s.tell(rev)
		return
	}
	if rev > s.seen {
		s.tell(rev)
	}
}

// caughtUp takes the revision read from the database on (re)connection. before is the newest revision told
// when the read began: every revision told by then had been committed, so a read below it means the
// database lost history.
func (s *Store) caughtUp(rev, before int64) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if rev < before {
		s.historyLost(rev)
		s.tell(rev)
		return
	}
	if rev > s.seen {
		s.tell(rev)
	}
}

// told is the newest revision told to watchers.
func (s *Store) told() int64 {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.seen
}

// historyLost logs that the revisions after kept are gone and records it in the change feed (a KindHistory
// change, in a write of its own), so that every server's readers learn it: a Sync stream then sends its
// agent everything again. Called with wmu held; the write runs on its own goroutine.
func (s *Store) historyLost(kept int64) {
	kept, told := max(kept, 0), s.seen
	s.log.Warn("store: the database's revision went back (restored from a backup, or failed over to a replica without the last commits); "+
		"changes after the kept revision are gone: agents are sent full snapshots again, and changes made since should be checked",
		"told", told, "kept", kept)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := s.write(ctx, func(w *sqlstore.Tx) error {
			if err := w.Change(store.KindHistory, strconv.FormatInt(kept, 10), false); err != nil {
				return err
			}
			return w.Audit("system", "store.history_lost", strconv.FormatInt(kept, 10), map[string]int64{"told": told, "kept": kept})
		})
		if err != nil {
			s.log.Error("store: recording that the database's revision went back failed; restart the servers so that agents resync in full", "error", err)
		}
	}()
}

// tell sends rev to every watcher. Called with wmu held.
func (s *Store) tell(rev int64) {
	s.seen = rev
	s.watchers.Send(rev)
}

// listen holds a connection LISTENing on the revision channel and tells watchers each revision notified.
// On each (re)connection, and every catchUp meanwhile, it reads the revision, so that revisions notified
// while it was not connected are not lost. It reconnects with jittered backoff until ctx ends.
func (s *Store) listen(ctx context.Context, cfg *pgx.ConnConfig, catchUp time.Duration) {
	defer close(s.listened)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, cfg, catchUp, func() { backoff = 100 * time.Millisecond })
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("store change feed: listening for other servers' changes failed; reconnecting", "error", err, "in", backoff)
		t := time.NewTimer(backoff/2 + rand.N(backoff/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (s *Store) listenOnce(ctx context.Context, cfg *pgx.ConnConfig, catchUp time.Duration, connected func()) error {
	conn, err := pgx.ConnectConfig(ctx, cfg.Copy())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return err
	}
	connected()
	for {
		var rev int64
		before := s.told()
		if err := conn.QueryRow(ctx, "SELECT revision FROM revision WHERE id = 1").Scan(&rev); err != nil {
			return fmt.Errorf("catch up: %w", err)
		}
		s.caughtUp(rev, before)
		wctx, cancel := context.WithTimeout(ctx, catchUp)
		for {
			n, err := conn.WaitForNotification(wctx)
			if err != nil {
				break
			}
			if r, err := strconv.ParseInt(n.Payload, 10, 64); err == nil {
				s.advance(r)
			}
		}
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if conn.IsClosed() {
			return errors.New("connection closed")
		}
	}
}

// dialect is PostgreSQL's SQL where it differs from SQLite's.
var dialect = sqlstore.Dialect{
	Right: func(str, n string) string { return "right(" + str + ", " + n + ")" },
	Instr: func(str, needle string) string { return "strpos(" + str + ", " + needle + ")" },
}

// write runs fn in one write transaction under the database-wide write lock and, if it committed a change,
// notifies every server's watchers of its revision.
func (s *Store) write(ctx context.Context, fn func(w *sqlstore.Tx) error) error {
	select {
	case s.wlock <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.wlock }()

	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", writeLockKey); err != nil {
		return fmt.Errorf("take the store's write lock: %w", err)
	}
	before := s.told()
	w := sqlstore.NewTx(ctx, rtx{tx}, s.now())
	if err := fn(w); err != nil {
		return err
	}
	rev := w.Revision()
	if rev != 0 {
		if _, err := tx.ExecContext(ctx, "SELECT pg_notify($1, $2)", s.channel, strconv.FormatInt(rev, 10)); err != nil {
			return fmt.Errorf("notify revision %d: %w", rev, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if seq, hash, ok := w.AuditHead(); ok && s.onHead != nil {
		s.onHead(seq, hash)
	}
	if rev != 0 {
		s.committed(rev, before)
	}
	return nil
}

// tables are the store's tables, for Probe and Check.
var tables = []string{"revision", "changes", "entries", "join_tokens", "agents", "grants", "target_modes", "audit", "authorities", "policy_bundles", "agent_policy", "policy_labels", "users", "enrolment_codes", "user_logins", "access_requests", "federated_bundles", "federations"}

// checkName is what Check runs.
const checkName = "postgres consistency check"

// Check reads every table in full and checks what the store's invariants say: the revision row is there and
// no change is newer than it, and the audit log's seqs run from 1 without a gap (VerifyAudit checks the
// hashes). Page-level integrity is PostgreSQL's own (data checksums, amcheck).
func (s *Store) Check(ctx context.Context) (string, []string, error) {
	var problems []string
	for _, t := range tables {
		var n int64
		if err := s.reader.QueryRowContext(ctx, "SELECT count(*) FROM "+t).Scan(&n); err != nil {
			if ctx.Err() != nil {
				return checkName, nil, err
			}
			problems = append(problems, fmt.Sprintf("table %s cannot be read: %v", t, err))
		}
	}
	var rows int
	var rev, maxChange int64
	if err := s.reader.QueryRowContext(ctx, "SELECT count(*), coalesce(max(revision), 0) FROM revision").Scan(&rows, &rev); err != nil {
		return checkName, nil, err
	}
	if rows != 1 {
		problems = append(problems, fmt.Sprintf("table revision has %d rows, want 1", rows))
	}
	if err := s.reader.QueryRowContext(ctx, "SELECT coalesce(max(revision), 0) FROM changes").Scan(&maxChange); err != nil {
		return checkName, nil, err
	}
	if maxChange > rev {
		problems = append(problems, fmt.Sprintf("changes reach revision %d but the store revision is %d", maxChange, rev))
	}
	var count, maxSeq int64
	if err := s.reader.QueryRowContext(ctx, "SELECT count(*), coalesce(max(seq), 0) FROM audit").Scan(&count, &maxSeq); err != nil {
		return checkName, nil, err
	}
	if count != maxSeq {
		problems = append(problems, fmt.Sprintf("the audit log has %d rows but its last seq is %d: rows are missing", count, maxSeq))
	}
	return checkName, problems, nil
}

// probeQueries read one row of every table.
var probeQueries = func() []string {
	var qs []string
	for _, t := range tables {
		qs = append(qs, "SELECT count(*) FROM (SELECT 1 FROM "+t+" LIMIT 1) AS probe")
	}
	return qs
}()

// Probe reads a row of each table on one connection.
func (s *Store) Probe(ctx context.Context) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("store probe: %w", err)
	}
	defer conn.Close()
	for _, q := range probeQueries {
		var n int
		if err := conn.QueryRowContext(ctx, q).Scan(&n); err != nil {
			return fmt.Errorf("store probe: %s: %w", q, err)
		}
	}
	return nil
}

// Lease keys: what one server at a time does (see Lead and Locked).
const (
	// LeaseCARotation is held by the one server that rotates the CA's roots and JWT keys.
	LeaseCARotation int64 = 0x6b697468_0003
	// LockCA is held while a server changes the CA's authorities (and while it loads or creates the CA, so
	// that servers starting together on an empty database make one CA).
	LockCA int64 = 0x6b697468_0004
)

// Lead runs run while this Store holds the lease key: a session advisory lock on a connection of its own,
// so that one server at a time does what run does. The others try again every retry (jittered) and take
// over when the holder stops or its connection to the database dies (the database ends its session and
// the lock with it); a holder whose connection fails a ping has run's context cancelled. Lead returns nil
// when ctx ends, or run's error.
func (s *Store) Lead(ctx context.Context, key int64, retry time.Duration, run func(context.Context) error) error {
	for {
		err := s.leadOnce(ctx, key, retry, run)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		t := time.NewTimer(retry/2 + rand.N(retry/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// leadOnce tries the lease once and, if it got it, runs run until ctx ends or the connection fails. It
// returns run's error when run ended by itself.
func (s *Store) leadOnce(ctx context.Context, key int64, retry time.Duration, run func(context.Context) error) error {
	conn, err := pgx.ConnectConfig(ctx, s.connCfg.Copy())
	if err != nil {
		return nil
	}
	defer conn.Close(context.Background())
	var got bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&got); err != nil || !got {
		return nil
	}
	s.log.Info("store lease taken", "lease", key)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(rctx) }()
	tick := time.NewTicker(retry)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-tick.C:
			pctx, pcancel := context.WithTimeout(ctx, retry)
			err := conn.Ping(pctx)
			pcancel()
			if err != nil {
				s.log.Warn("store lease lost: the connection holding it failed", "lease", key, "error", err)
				cancel()
				<-done
				return nil
			}
		}
	}
}

// Locked runs fn while holding the advisory lock key (waiting for it), on a connection of its own.
func (s *Store) Locked(ctx context.Context, key int64, fn func() error) error {
	conn, err := pgx.ConnectConfig(ctx, s.connCfg.Copy())
	if err != nil {
		return fmt.Errorf("take lock: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", key); err != nil {
		return fmt.Errorf("take lock: %w", err)
	}
	return fn()
}
