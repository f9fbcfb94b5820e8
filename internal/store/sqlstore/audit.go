package sqlstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/kithid/kith/internal/store"
)

// The audit log is append-only (triggers refuse UPDATE and DELETE) and hash-chained. Row seq n stores
//
//	prev_hash = hash of row n-1, or 32 zero bytes for row 1
//	hash      = SHA-256(prev_hash || encoding)
//
// where encoding is the concatenation of
//
//	uint64 big-endian   seq
//	string              time, exactly as stored: UTC, RFC 3339 with nanoseconds (time.RFC3339Nano)
//	string              actor
//	string              action
//	string              target
//	string              detail (the JSON text exactly as stored)
//	uint64 big-endian   revision (two's complement of the int64)
//
// and each string is a uint32 big-endian byte length followed by the UTF-8 bytes. The length prefixes make
// the encoding unambiguous: no two different rows encode to the same bytes. Seqs start at 1 and have no
// gaps.

// genesisHash is the prev_hash of the first row.
var genesisHash = make([]byte, sha256.Size)

type auditRow struct {
	seq      int64
	time     string
	actor    string
	action   string
	target   string
	detail   string
	revision int64
	prevHash []byte
	hash     []byte
}

func (r *auditRow) computeHash() []byte {
	var buf bytes.Buffer
	buf.Grow(64 + len(r.time) + len(r.actor) + len(r.action) + len(r.target) + len(r.detail))
	buf.Write(r.prevHash)
	buf.Write(binary.BigEndian.AppendUint64(nil, uint64(r.seq)))
	for _, s := range []string{r.time, r.actor, r.action, r.target, r.detail} {
		buf.Write(binary.BigEndian.AppendUint32(nil, uint32(len(s))))
		buf.WriteString(s)
	}
	buf.Write(binary.BigEndian.AppendUint64(nil, uint64(r.revision)))
	sum := sha256.Sum256(buf.Bytes())
	return sum[:]
}

// audit appends one row to the chain, attributed to this transaction's revision (0 if it changed nothing).
func (w *Tx) audit(actor, action, target string, detail any) error {
	text := "{}"
	if detail != nil {
		b, err := json.Marshal(detail)
		if err != nil {
			return fmt.Errorf("encode audit detail for %s %s: %w", action, target, err)
		}
		text = string(b)
	}
	if !w.headLoaded {
		err := w.queryRow("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").Scan(&w.headSeq, &w.headHash)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			w.headSeq, w.headHash = 0, genesisHash
		case err != nil:
			return fmt.Errorf("read audit head: %w", err)
		}
		w.headLoaded = true
	}
	r := auditRow{
		seq:      w.headSeq + 1,
		time:     timeString(w.now),
		actor:    actor,
		action:   action,
		target:   target,
		detail:   text,
		revision: w.rev,
		prevHash: w.headHash,
	}
	r.hash = r.computeHash()
	if _, err := w.exec(`INSERT INTO audit (seq, time, actor, action, target, detail, revision, prev_hash, hash)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.seq, r.time, r.actor, r.action, r.target, r.detail, r.revision, r.prevHash, r.hash); err != nil {
		return fmt.Errorf("append audit %s %s: %w", action, target, err)
	}
	w.headSeq, w.headHash = r.seq, r.hash
	return nil
}

// Audit records an event that changes nothing else, such as a refused join token. detail is encoded as
// JSON (nil as {}); it must not carry secrets. (The postgres backend group-commits concurrent calls.)
func (s *Store) Audit(ctx context.Context, actor, action, target string, detail any) error {
	return s.write(ctx, func(w *Tx) error {
		return w.audit(actor, action, target, detail)
	})
}

// ListAudit returns audit events in seq order.
func (s *Store) ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditEvent, error) {
	q := "SELECT seq, time, actor, action, target, detail, revision, prev_hash, hash FROM audit WHERE seq > ?"
	args := []any{f.AfterSeq}
	if f.BeforeSeq > 0 {
		q += " AND seq < ?"
		args = append(args, f.BeforeSeq)
	}
	q += " ORDER BY seq"
	if f.NewestFirst {
		q += " DESC"
	}
	if f.Limit > 0 && f.Since.IsZero() {
		q += " LIMIT ?"
		args = append(args, f.Limit)
	}
	rows, err := s.reader.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	var out []store.AuditEvent
	for rows.Next() {
		r, err := scanAudit(rows)
		if err != nil {
			return nil, fmt.Errorf("list audit: %w", err)
		}
		t, err := parseTime(sql.NullString{String: r.time, Valid: true})
		if err != nil {
			return nil, fmt.Errorf("list audit: seq %d: %w", r.seq, err)
		}
		// Times are compared here, not in SQL: RFC 3339 strings with fractions do not sort as text.
		if !f.Since.IsZero() && t.Before(f.Since) {
			if f.NewestFirst {
				break // the log is appended in time order: all the rest are older
			}
			continue
		}
		if f.Limit > 0 && len(out) == f.Limit {
			break
		}
		out = append(out, store.AuditEvent{
			Seq: r.seq, Time: t, Actor: r.actor, Action: r.action, Target: r.target, Detail: r.detail,
			Revision: r.revision, PrevHash: r.prevHash, Hash: r.hash,
		})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return out, nil
}

func scanAudit(rows *sql.Rows) (auditRow, error) {
	var r auditRow
	err := rows.Scan(&r.seq, &r.time, &r.actor, &r.action, &r.target, &r.detail, &r.revision, &r.prevHash, &r.hash)
	return r, err
}

// VerifyAudit recomputes the hash chain from the first row and reports the first row that does not fit:
// a gap in seq, a prev_hash that is not the previous row's hash, or a hash that does not match the row's
// contents. Rows removed from the end cannot be detected from the log alone; compare HeadHash with a copy
// kept elsewhere for that.
func (s *Store) VerifyAudit(ctx context.Context) (store.AuditVerification, error) {
	rows, err := s.reader.QueryContext(ctx,
		"SELECT seq, time, actor, action, target, detail, revision, prev_hash, hash FROM audit ORDER BY seq")
	if err != nil {
		return store.AuditVerification{}, fmt.Errorf("verify audit: %w", err)
	}
	defer rows.Close()
	v := store.AuditVerification{OK: true}
	prevSeq, prevHash := int64(0), genesisHash
	for rows.Next() {
		r, err := scanAudit(rows)
		if err != nil {
			return store.AuditVerification{}, fmt.Errorf("verify audit: %w", err)
		}
		v.Count++
		var problems []string
		if r.seq != prevSeq+1 {
			missing := fmt.Sprintf("rows %d to %d are", prevSeq+1, r.seq-1)
			if r.seq == prevSeq+2 {
				missing = fmt.Sprintf("row %d is", prevSeq+1)
			}
			problems = append(problems, fmt.Sprintf("seq %d follows seq %d: %s missing", r.seq, prevSeq, missing))
		}
		if !bytes.Equal(r.prevHash, prevHash) {
			if prevSeq == 0 {
				problems = append(problems, "prev_hash of the first row is not the genesis hash (32 zero bytes)")
			} else {
				problems = append(problems, fmt.Sprintf("prev_hash does not match the hash of seq %d", prevSeq))
			}
		}
		if !bytes.Equal(r.computeHash(), r.hash) {
			problems = append(problems, "hash does not match the row's contents (time, actor, action, target, detail or revision was altered)")
		}
		if len(problems) > 0 {
			v.OK = false
			v.BrokenAt = r.seq
			v.Problem = strings.Join(problems, "; ")
			v.HeadHash = nil
			return v, nil
		}
		prevSeq, prevHash = r.seq, r.hash
		v.HeadHash = r.hash
	}
	if err := rows.Err(); err != nil {
		return store.AuditVerification{}, fmt.Errorf("verify audit: %w", err)
	}
	return v, nil
}
