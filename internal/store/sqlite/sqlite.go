// Package sqlite is Kith's embedded store: registration entries, agents, join tokens, CA authorities and the
// hash-chained audit log in one SQLite database file (pure Go driver modernc.org/sqlite, WAL mode).
//
// Writes go through a single connection and are serialized; reads use a separate pool of read-only
// connections that WAL lets run alongside the writer. Every change is one transaction that bumps the
// store-wide revision, records one row per changed object in the change feed and appends its audit row(s);
// watchers are told the new revision after commit.
//
// The schema is created and upgraded by embedded migrations; the schema version is PRAGMA user_version. A
// database written by a newer Kith (a higher version than this binary knows) is refused with
// store.ErrSchemaTooNew rather than opened.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/kithid/kith/internal/store"
	"github.com/kithid/kith/internal/store/sqlstore"
)

var _ store.Backend = (*Store)(nil)

//go:embed migrations/*.sql
var migrationFS embed.FS

// busyTimeout is how long a connection waits for a lock held by another connection (another process
// touching the same file, or a checkpoint) before failing with SQLITE_BUSY.
const busyTimeout = 10 * time.Second

// Config configures Open.
type Config struct {
	Path   string           // database file path (required); its directory is created 0700 if missing
	Now    func() time.Time // zero means time.Now
	Logger *slog.Logger     // zero means discard
	// OnAuditHead is called after each commit that appended audit rows, with the new head (the last seq and
	// its hash), before the next write starts: calls come in commit order. It runs inside the write lock, so
	// it must be quick; the server signs the head into a checkpoint file with it. Zero: nothing is called.
	OnAuditHead func(seq int64, hash []byte)

	synchronous string // PRAGMA synchronous of the writer; zero: FULL (the benchmarks compare NORMAL)
}

// Store is the SQLite store. It is safe for concurrent use. Its queries are package sqlstore's.
type Store struct {
	*sqlstore.Store
	path   string
	now    func() time.Time
	onHead func(seq int64, hash []byte)
	log    *slog.Logger
	writer *sql.DB // exactly one connection: writes are serialized
	reader *sql.DB // read-only pool

	// wlock is held (a token in the channel) for the whole of a write transaction and its notification, so
	// that revisions are committed and announced in order. A channel rather than a mutex so that waiting
	// for it honours ctx.
	wlock chan struct{}

	watchers sqlstore.Watchers
}

// Open opens (creating if needed) the database at cfg.Path and brings its schema up to date.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Path == "" {
		return nil, errors.New("open sqlite store: no database path configured")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := prepareFile(cfg.Path); err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", cfg.Path, err)
	}

	// Without a "file:" prefix the driver takes everything before '?' as the file name verbatim.
	common := fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=foreign_keys(1)", busyTimeout.Milliseconds())
	if cfg.synchronous == "" {
		cfg.synchronous = "FULL"
	}
	// synchronous=FULL: every commit syncs the WAL before it returns, so an acknowledged write (and the
	// audit row that is part of it) survives power loss, not only a crash of the process. NORMAL would sync
	// only at checkpoints and can lose the last commits on power loss.
	writer, err := sql.Open("sqlite", cfg.Path+"?"+common+
		"&_pragma=journal_mode(WAL)&_pragma=synchronous("+cfg.synchronous+")&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", cfg.Path, err)
	}
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	writer.SetConnMaxLifetime(0)
	writer.SetConnMaxIdleTime(0)

	if err := quickCheck(ctx, writer); err != nil {
		writer.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", cfg.Path, err)
	}
	version, err := migrate(ctx, writer, cfg.Path, cfg.Logger)
	if err != nil {
		writer.Close()
		return nil, err
	}

	reader, err := sql.Open("sqlite", cfg.Path+"?"+common+"&_pragma=query_only(1)")
	if err != nil {
		writer.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", cfg.Path, err)
	}
	n := min(max(runtime.GOMAXPROCS(0), 4), 16)
	reader.SetMaxOpenConns(n)
	reader.SetMaxIdleConns(n)

	s := &Store{
		path:   cfg.Path,
		now:    cfg.Now,
		onHead: cfg.OnAuditHead,
		log:    cfg.Logger,
		writer: writer,
		reader: reader,
		wlock:  make(chan struct{}, 1),
	}
	s.Store = sqlstore.New(reader, s.write, dialect)
	rev, err := s.Revision(ctx)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", cfg.Path, err)
	}
	s.log.Info("store opened", "path", cfg.Path, "schema_version", version, "revision", rev)
	return s, nil
}

// prepareFile creates the database's directory (0700) and file (0600) if missing, and makes sure an existing
// file is not readable by others.
func prepareFile(path string) error {
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create directory: %w", err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	return nil
}

func migrations() ([]sqlstore.Migration, error) {
	return sqlstore.Migrations(migrationFS, "migrations")
}

// SchemaVersion is the newest schema version this binary knows.
func SchemaVersion() int {
	ms, _ := migrations()
	return len(ms)
}

// migrate applies the migrations the database lacks, each in its own transaction together with its
// user_version bump, and returns the resulting version.
func migrate(ctx context.Context, db *sql.DB, path string, log *slog.Logger) (int, error) {
	ms, err := migrations()
	if err != nil {
		return 0, fmt.Errorf("read embedded migrations: %w", err)
	}
	var version int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return 0, fmt.Errorf("open sqlite store %s: read schema version: %w", path, err)
	}
	if version > len(ms) {
		return 0, &sqlstore.SchemaTooNewError{Where: path, Have: version, Support: len(ms)}
	}
	for i := version; i < len(ms); i++ {
		m := ms[i]
		err := func() error {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer tx.Rollback()
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", i+1)); err != nil {
				return err
			}
			return tx.Commit()
		}()
		if err != nil {
			return 0, fmt.Errorf("migrate sqlite store %s to schema version %d (%s): %w", path, i+1, m.Name, err)
		}
		log.Info("store schema migrated", "path", path, "schema_version", i+1)
	}
	return len(ms), nil
}

// Close closes the database and every watch channel.
func (s *Store) Close() error {
	s.watchers.Close()
	return errors.Join(s.reader.Close(), s.writer.Close())
}

// Watch subscribes to committed revisions. After each change transaction commits, its revision is sent on
// the channel. The channel holds one value and coalesces: a slow reader finds only the newest revision
// waiting, and writers never block on it. The returned func unsubscribes and closes the channel; Close
// closes every channel too.
func (s *Store) Watch() (<-chan int64, func()) { return s.watchers.Watch() }

// dialect is SQLite's SQL where it differs from PostgreSQL's.
var dialect = sqlstore.Dialect{
	Right: func(str, n string) string { return "substr(" + str + ", -" + n + ")" },
	Instr: func(str, needle string) string { return "instr(" + str + ", " + needle + ")" },
}

// write runs fn in one write transaction and, if it committed a change, tells watchers.
func (s *Store) write(ctx context.Context, fn func(w *sqlstore.Tx) error) error {
	select {
	case s.wlock <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.wlock }()

	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	stx := &stmtTx{tx: tx, stmts: map[string]*sql.Stmt{}}
	defer stx.close()
	w := sqlstore.NewTx(ctx, stx, s.now())
	if err := fn(w); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if seq, hash, ok := w.AuditHead(); ok && s.onHead != nil {
		s.onHead(seq, hash)
	}
	if rev := w.Revision(); rev != 0 {
		s.watchers.Send(rev)
	}
	return nil
}

// stmtTx is a write transaction whose statements are prepared once per transaction, so that bulk
// operations do not re-parse them.
type stmtTx struct {
	tx    *sql.Tx
	stmts map[string]*sql.Stmt
}

func (t *stmtTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, ok := t.stmts[query]
	if !ok {
		var err error
		st, err = t.tx.PrepareContext(ctx, query)
		if err != nil {
			return nil, err
		}
		t.stmts[query] = st
	}
	return st.ExecContext(ctx, args...)
}

func (t *stmtTx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, query, args...)
}

func (t *stmtTx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, query, args...)
}

func (t *stmtTx) close() {
	for _, st := range t.stmts {
		st.Close()
	}
}

// quickCheck runs SQLite's quick_check, so that a corrupted database is refused at start rather than
// serving reads that fail and accepting writes on top of broken pages.
func quickCheck(ctx context.Context, db *sql.DB) error {
	problems, err := quickCheckProblems(ctx, db)
	if err != nil {
		return fmt.Errorf("the database is corrupted or not a Kith store (%v): restore it from a backup", err)
	}
	if len(problems) > 0 {
		if len(problems) > 5 {
			problems = append(problems[:5], fmt.Sprintf("and %d more", len(problems)-5))
		}
		return fmt.Errorf("the database is corrupted (sqlite quick_check: %s): restore it from a backup", strings.Join(problems, "; "))
	}
	return nil
}

// quickCheckName is what Check runs.
const quickCheckName = "sqlite quick_check"

// quickCheckProblems runs PRAGMA quick_check and returns the lines other than "ok". An error that stops
// the check itself (a page that cannot be read at all) is returned as an error.
func quickCheckProblems(ctx context.Context, db *sql.DB) ([]string, error) {
	rows, err := db.QueryContext(ctx, "PRAGMA quick_check")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", quickCheckName, err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return nil, fmt.Errorf("%s: %w", quickCheckName, err)
		}
		if line != "ok" {
			problems = append(problems, line)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", quickCheckName, err)
	}
	return problems, nil
}

// Check runs quick_check on a read connection: it reads every page, in time proportional to the
// database's size (and does not block writers: WAL).
func (s *Store) Check(ctx context.Context) (string, []string, error) {
	problems, err := quickCheckProblems(ctx, s.reader)
	if err != nil {
		// A page so broken that the check stops is a problem found, not a failure to check.
		if ctx.Err() != nil {
			return quickCheckName, nil, err
		}
		return quickCheckName, []string{err.Error()}, nil
	}
	return quickCheckName, problems, nil
}

// probeQueries read the newest row of every table: the pages most reads and every write touch.
var probeQueries = func() []string {
	var qs []string
	for _, t := range []string{"revision", "changes", "entries", "join_tokens", "agents", "grants", "target_modes", "audit", "authorities", "policy_bundles", "agent_policy", "policy_labels", "users", "enrolment_codes", "user_logins", "access_requests", "federated_bundles", "federations"} {
		qs = append(qs, "SELECT count(*) FROM (SELECT * FROM "+t+" ORDER BY rowid DESC LIMIT 1)")
	}
	return qs
}()

// Probe reads the newest row of each main table, on one read connection.
func (s *Store) Probe(ctx context.Context) error {
	conn, err := s.reader.Conn(ctx)
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

// CheckFile runs quick_check on the database at path, read-only and without migrating it: `kith store
// check --data-dir` on a stopped server (or beside a running one: WAL lets it read alongside).
func CheckFile(ctx context.Context, path string) (string, []string, error) {
	if _, err := os.Stat(path); err != nil {
		return quickCheckName, nil, err
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		return quickCheckName, nil, err
	}
	defer db.Close()
	problems, err := quickCheckProblems(ctx, db)
	if err != nil {
		return quickCheckName, []string{err.Error()}, nil
	}
	return quickCheckName, problems, nil
}

// HasAuthorities reports whether the database at path holds CA authorities, reading it read-only, without
// the integrity check or migrations of Open (the server asks before it opens its store, to tell an
// initialised data dir's lost database from its own). A database without the table has none.
func HasAuthorities(ctx context.Context, path string) (bool, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		return false, err
	}
	defer db.Close()
	var tables int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'authorities'").Scan(&tables); err != nil {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	if tables == 0 {
		return false, nil
	}
	var n int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM (SELECT 1 FROM authorities LIMIT 1)").Scan(&n); err != nil {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	return n > 0, nil
}
