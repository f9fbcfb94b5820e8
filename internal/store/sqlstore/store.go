// Package sqlstore is the store contract (package store) over SQL: the queries, the change feed's rows and
// the hash-chained audit log, written once for every SQL backend. A backend (sqlite, postgres) opens its
// database, migrates its schema and runs the write transactions — with its own locking, and its own way
// of telling watchers — and hands the rest to a Store made by New.
//
// Queries use ? placeholders (a backend that needs others rewrites them) and SQL both SQLite and
// PostgreSQL run: upserts with ON CONFLICT … DO UPDATE, booleans as true/false; what differs between them
// is in Dialect.
package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/kithid/kith/internal/store"
)

// Querier runs read queries with ? placeholders.
type Querier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

// TxQuerier runs the statements of one write transaction, with ? placeholders.
type TxQuerier interface {
	Querier
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
}

// WriteFunc runs fn in one write transaction of the backend (see Tx) and commits it if fn returns nil.
type WriteFunc func(ctx context.Context, fn func(w *Tx) error) error

// Dialect is what differs between the SQL of the backends.
type Dialect struct {
	// Right is the SQL for the last n characters of s (n an SQL expression).
	Right func(s, n string) string
	// Instr is the SQL for the 1-based position of needle in s, 0 if absent.
	Instr func(s, needle string) string
}

// Store implements the store contract's queries over a backend's database. Backends embed it.
type Store struct {
	reader  Querier
	write   WriteFunc
	dialect Dialect
}

// New returns a Store that reads through reader and writes through write.
func New(reader Querier, write WriteFunc, d Dialect) *Store {
	return &Store{reader: reader, write: write, dialect: d}
}

// Tx is one write transaction: its statements, the store clock when it started and the revision it
// produces. Backends make it with NewTx in their WriteFunc.
type Tx struct {
	tx  TxQuerier
	ctx context.Context
	now time.Time // the store clock at the start of the transaction (once its lock was held), UTC
	rev int64     // the revision this transaction produces; 0 until bump

	headLoaded bool
	headSeq    int64
	headHash   []byte
}

// NewTx starts the Tx of a backend's write transaction tx, at store time now.
func NewTx(ctx context.Context, tx TxQuerier, now time.Time) *Tx {
	return &Tx{tx: tx, ctx: ctx, now: CanonTime(now)}
}

// Revision is the revision the transaction produced; 0 if it changed nothing.
func (w *Tx) Revision() int64 { return w.rev }

// AuditHead is the audit log's head after the transaction, if it appended to it.
func (w *Tx) AuditHead() (seq int64, hash []byte, ok bool) {
	return w.headSeq, w.headHash, w.headLoaded
}

// Change records that an object changed at this transaction's revision.
func (w *Tx) Change(kind store.ChangeKind, id string, deleted bool) error {
	return w.change(kind, id, deleted)
}

// Audit appends one row to the audit chain in this transaction.
func (w *Tx) Audit(actor, action, target string, detail any) error {
	return w.audit(actor, action, target, detail)
}

// Exec, QueryRow and Query run a backend's own statements in the transaction (such as copying rows in).
func (w *Tx) Exec(query string, args ...any) (sql.Result, error) { return w.exec(query, args...) }

func (w *Tx) QueryRow(query string, args ...any) *sql.Row { return w.queryRow(query, args...) }

func (w *Tx) Query(query string, args ...any) (*sql.Rows, error) {
	return w.tx.QueryContext(w.ctx, query, args...)
}

func (w *Tx) exec(query string, args ...any) (sql.Result, error) {
	return w.tx.ExecContext(w.ctx, query, args...)
}

func (w *Tx) queryRow(query string, args ...any) *sql.Row {
	return w.tx.QueryRowContext(w.ctx, query, args...)
}

// bump advances the store revision once per transaction and returns it.
func (w *Tx) bump() (int64, error) {
	if w.rev != 0 {
		return w.rev, nil
	}
	if err := w.queryRow("UPDATE revision SET revision = revision + 1 WHERE id = 1 RETURNING revision").Scan(&w.rev); err != nil {
		return 0, fmt.Errorf("bump revision: %w", err)
	}
	return w.rev, nil
}

func (w *Tx) change(kind store.ChangeKind, id string, deleted bool) error {
	rev, err := w.bump()
	if err != nil {
		return err
	}
	if _, err := w.exec("INSERT INTO changes (revision, kind, object_id, deleted) VALUES (?, ?, ?, ?)", rev, string(kind), id, deleted); err != nil {
		return fmt.Errorf("record change of %s %s: %w", kind, id, err)
	}
	return nil
}

// Revision returns the store-wide revision: the number of change transactions committed so far.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	var rev int64
	if err := s.reader.QueryRowContext(ctx, "SELECT revision FROM revision WHERE id = 1").Scan(&rev); err != nil {
		return 0, fmt.Errorf("read store revision: %w", err)
	}
	return rev, nil
}

// ChangesSince returns every change with a revision greater than rev, in commit order. A transaction that
// changed several objects yields one Change per object, all with the same revision.
func (s *Store) ChangesSince(ctx context.Context, rev int64) ([]store.Change, error) {
	rows, err := s.reader.QueryContext(ctx,
		"SELECT revision, kind, object_id, deleted FROM changes WHERE revision > ? ORDER BY revision, seq", rev)
	if err != nil {
		return nil, fmt.Errorf("list changes since revision %d: %w", rev, err)
	}
	defer rows.Close()
	var out []store.Change
	for rows.Next() {
		var c store.Change
		var kind string
		if err := rows.Scan(&c.Revision, &kind, &c.ID, &c.Deleted); err != nil {
			return nil, fmt.Errorf("list changes since revision %d: %w", rev, err)
		}
		c.Kind = store.ChangeKind(kind)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list changes since revision %d: %w", rev, err)
	}
	return out, nil
}
