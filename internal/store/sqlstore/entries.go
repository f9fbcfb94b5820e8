package sqlstore

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/internal/store"
)

const entryColumns = "id, spiffe_id, parent_id, node_selectors, selectors, x509_ttl, jwt_ttl, dns_names, labels, created_at, updated_at, revision"

// entryReadColumns are what reads select: entryColumns and the source (written by setSource).
const entryReadColumns = entryColumns + ", source, federates_with"

// sourceOf is the source an entry is stored with: "cli" when it names none.
func sourceOf(e store.Entry) string {
	if e.Source == "" {
		return "cli"
	}
	return e.Source
}

// setSource records e's source (a column apart from entryArgs').
func (w *Tx) setSource(e store.Entry) error {
	fed, err := encodeJSON(trustDomainNames(e.FederatesWith))
	if err != nil {
		return err
	}
	_, err = w.exec("UPDATE entries SET source = ?, federates_with = ? WHERE id = ?", e.Source, fed, e.ID)
	return err
}

// dedupKey identifies what an entry matches: its SPIFFE ID, parent and the sets of node selectors and
// selectors (order and repeats do not matter). Two entries with the same key are duplicates.
func dedupKey(e store.Entry) string {
	h := sha256.New()
	str := func(s string) {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(s))))
		h.Write([]byte(s))
	}
	sels := func(ss []attestation.Selector) {
		ss = attestation.Normalize(slices.Clone(ss))
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(ss))))
		for _, s := range ss {
			str(s.Type)
			str(s.Key)
			str(s.Value)
		}
	}
	str(e.SPIFFEID.String())
	str(e.ParentID.String())
	sels(e.NodeSelectors)
	sels(e.Selectors)
	return hex.EncodeToString(h.Sum(nil))
}

// entryDetail is the audit detail of an entry.
type entryDetail struct {
	ID            string            `json:"id"`
	SPIFFEID      string            `json:"spiffe_id"`
	ParentID      string            `json:"parent_id,omitempty"`
	NodeSelectors []string          `json:"node_selectors,omitempty"`
	Selectors     []string          `json:"selectors"`
	X509TTL       string            `json:"x509_ttl,omitempty"`
	JWTTTL        string            `json:"jwt_ttl,omitempty"`
	DNSNames      []string          `json:"dns_names,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	Source        string            `json:"source,omitempty"`
	FederatesWith []string          `json:"federates_with,omitempty"`
	Revision      int64             `json:"revision"`
}

func detailOfEntry(e store.Entry) entryDetail {
	d := entryDetail{
		ID:            e.ID,
		SPIFFEID:      e.SPIFFEID.String(),
		ParentID:      e.ParentID.String(),
		NodeSelectors: attestation.Strings(e.NodeSelectors),
		Selectors:     attestation.Strings(e.Selectors),
		DNSNames:      e.DNSNames,
		Labels:        e.Labels,
		Source:        e.Source,
		FederatesWith: trustDomainNames(e.FederatesWith),
		Revision:      e.Revision,
	}
	if e.X509TTL != 0 {
		d.X509TTL = e.X509TTL.String()
	}
	if e.JWTTTL != 0 {
		d.JWTTTL = e.JWTTTL.String()
	}
	return d
}

// lastSegment is the short name an entry is indexed by: its SPIFFE ID after the last '/' (the name
// column, as migration 0007 computes it for existing rows).
func lastSegment(id string) string { return id[strings.LastIndex(id, "/")+1:] }

// entryArgs returns the column values for e in entryColumns order, followed by its dedup key and name.
func entryArgs(e store.Entry) ([]any, error) {
	nodeSels, err := encodeSelectors(e.NodeSelectors)
	if err != nil {
		return nil, err
	}
	sels, err := encodeSelectors(e.Selectors)
	if err != nil {
		return nil, err
	}
	dns, err := encodeJSON(e.DNSNames)
	if err != nil {
		return nil, err
	}
	labels, err := encodeJSON(e.Labels)
	if err != nil {
		return nil, err
	}
	return []any{
		e.ID, e.SPIFFEID.String(), e.ParentID.String(), nodeSels, sels, int64(e.X509TTL), int64(e.JWTTTL),
		dns, labels, timeValue(e.CreatedAt), timeValue(e.UpdatedAt), e.Revision, dedupKey(e),
		lastSegment(e.SPIFFEID.String()),
	}, nil
}

func validateEntry(e store.Entry) error {
	if e.SPIFFEID.IsZero() {
		return errors.New("entry has no spiffe id")
	}
	return nil
}

// CreateEntry stores a new entry. It assigns the ID (a UUID) when empty, CreatedAt, UpdatedAt and
// Revision. An entry with the same SPIFFE ID, parent, node selectors and selectors as an existing one is
// refused with an error wrapping store.ErrAlreadyExists that names the existing entry.
func (s *Store) CreateEntry(ctx context.Context, actor string, e store.Entry) (store.Entry, error) {
	out, err := s.CreateEntries(ctx, actor, []store.Entry{e})
	if err != nil {
		return store.Entry{}, err
	}
	return out[0], nil
}

// CreateEntries stores entries in one transaction with one revision: all are created or none. Each entry
// gets its own change and its own entry.create audit row, so the audit log reads the same whether entries
// were created one by one or in bulk.
func (s *Store) CreateEntries(ctx context.Context, actor string, es []store.Entry) ([]store.Entry, error) {
	if len(es) == 0 {
		return []store.Entry{}, nil
	}
	out := make([]store.Entry, len(es))
	err := s.write(ctx, func(w *Tx) error {
		rev, err := w.bump()
		if err != nil {
			return err
		}
		for i, e := range es {
			if err := validateEntry(e); err != nil {
				return fmt.Errorf("create entry %d (%s): %w", i, e.SPIFFEID, err)
			}
			if e.ID == "" {
				e.ID = uuid.NewString()
			}
			e.CreatedAt, e.UpdatedAt, e.Revision, e.Source = w.now, w.now, rev, sourceOf(e)
			args, err := entryArgs(e)
			if err != nil {
				return fmt.Errorf("create entry %s: %w", e.SPIFFEID, err)
			}
			// The source and federates_with go in with the row: one statement (a round trip to the database)
			// fewer per entry.
			fed, err := encodeJSON(trustDomainNames(e.FederatesWith))
			if err != nil {
				return err
			}
			res, err := w.exec("INSERT INTO entries ("+entryColumns+", dedup_key, name, source, federates_with) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", append(args, e.Source, fed)...)
			if err != nil {
				return fmt.Errorf("create entry %s: %w", e.SPIFFEID, err)
			}
			if n, err := res.RowsAffected(); err != nil {
				return fmt.Errorf("create entry %s: %w", e.SPIFFEID, err)
			} else if n == 0 {
				return w.entryConflict(e, args[len(args)-2].(string))
			}
			if err := w.change(store.KindEntry, e.ID, false); err != nil {
				return err
			}
			if err := w.audit(actor, "entry.create", e.ID, detailOfEntry(e)); err != nil {
				return err
			}
			out[i] = e
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// entryConflict explains why inserting e conflicted: a duplicate of an existing entry, or a taken ID.
func (w *Tx) entryConflict(e store.Entry, key string) error {
	var existing string
	err := w.queryRow("SELECT id FROM entries WHERE dedup_key = ? AND id <> ?", key, e.ID).Scan(&existing)
	switch {
	case err == nil:
		return fmt.Errorf("create entry for %s: entry %s has the same spiffe id, parent and selectors: %w", e.SPIFFEID, existing, store.ErrAlreadyExists)
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("create entry for %s: entry id %s is taken: %w", e.SPIFFEID, e.ID, store.ErrAlreadyExists)
	default:
		return fmt.Errorf("create entry for %s: %w", e.SPIFFEID, err)
	}
}

// UpdateEntry replaces the entry with e.ID, keeping its CreatedAt and setting UpdatedAt and Revision. It
// returns store.ErrNotFound if there is none, and refuses a change that would duplicate another entry.
func (s *Store) UpdateEntry(ctx context.Context, actor string, e store.Entry) (store.Entry, error) {
	if err := validateEntry(e); err != nil {
		return store.Entry{}, fmt.Errorf("update entry %s: %w", e.ID, err)
	}
	err := s.write(ctx, func(w *Tx) error {
		old, err := getEntry(w.ctx, w.tx, e.ID)
		if err != nil {
			return fmt.Errorf("update entry %s: %w", e.ID, err)
		}
		key := dedupKey(e)
		var dup string
		switch err := w.queryRow("SELECT id FROM entries WHERE dedup_key = ? AND id <> ?", key, e.ID).Scan(&dup); {
		case err == nil:
			return fmt.Errorf("update entry %s: entry %s has the same spiffe id, parent and selectors: %w", e.ID, dup, store.ErrAlreadyExists)
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("update entry %s: %w", e.ID, err)
		}
		rev, err := w.bump()
		if err != nil {
			return err
		}
		e.CreatedAt, e.UpdatedAt, e.Revision, e.Source = old.CreatedAt, w.now, rev, sourceOf(e)
		args, err := entryArgs(e)
		if err != nil {
			return fmt.Errorf("update entry %s: %w", e.ID, err)
		}
		// args: id first, then the other columns, the dedup key and the name.
		if _, err := w.exec(`UPDATE entries SET spiffe_id = ?, parent_id = ?, node_selectors = ?, selectors = ?,
			x509_ttl = ?, jwt_ttl = ?, dns_names = ?, labels = ?, created_at = ?, updated_at = ?, revision = ?, dedup_key = ?,
			name = ? WHERE id = ?`, append(args[1:], e.ID)...); err != nil {
			return fmt.Errorf("update entry %s: %w", e.ID, err)
		}
		if err := w.setSource(e); err != nil {
			return fmt.Errorf("update entry %s: %w", e.ID, err)
		}
		if err := w.change(store.KindEntry, e.ID, false); err != nil {
			return err
		}
		return w.audit(actor, "entry.update", e.ID, map[string]entryDetail{
			"before": detailOfEntry(old),
			"after":  detailOfEntry(e),
		})
	})
	if err != nil {
		return store.Entry{}, err
	}
	return e, nil
}

// DeleteEntry deletes the entry with the given ID and returns it as it was; store.ErrNotFound if there is
// none.
func (s *Store) DeleteEntry(ctx context.Context, actor string, id string) (store.Entry, error) {
	var old store.Entry
	err := s.write(ctx, func(w *Tx) error {
		var err error
		old, err = getEntry(w.ctx, w.tx, id)
		if err != nil {
			return fmt.Errorf("delete entry %s: %w", id, err)
		}
		if _, err := w.exec("DELETE FROM entries WHERE id = ?", id); err != nil {
			return fmt.Errorf("delete entry %s: %w", id, err)
		}
		if err := w.change(store.KindEntry, id, true); err != nil {
			return err
		}
		d := detailOfEntry(old)
		d.Revision = w.rev
		return w.audit(actor, "entry.delete", id, d)
	})
	if err != nil {
		return store.Entry{}, err
	}
	return old, nil
}

// GetEntry returns the entry with the given ID, or store.ErrNotFound.
func (s *Store) GetEntry(ctx context.Context, id string) (store.Entry, error) {
	e, err := getEntry(ctx, s.reader, id)
	if err != nil {
		return store.Entry{}, fmt.Errorf("get entry %s: %w", id, err)
	}
	return e, nil
}

// ListEntries returns the entries that match f, ordered by SPIFFE ID then ID.
func (s *Store) ListEntries(ctx context.Context, f store.EntryFilter) ([]store.Entry, error) {
	var where []string
	var args []any
	if !f.SPIFFEID.IsZero() {
		where = append(where, "spiffe_id = ?")
		args = append(args, f.SPIFFEID.String())
	}
	if !f.ParentID.IsZero() {
		where = append(where, "parent_id = ?")
		args = append(args, f.ParentID.String())
	}
	if p := f.SourcePrefix; p != "" {
		where = append(where, "substr(source, 1, ?) = ?")
		args = append(args, len(p), p)
	}
	if p := f.SPIFFEIDPrefix; p != "" {
		// A range on the (spiffe_id, id) index: every string with prefix p sorts at or after p and before
		// p with its last byte raised by one (when that byte is 0xff, no upper bound is needed below it).
		where = append(where, "spiffe_id >= ?")
		args = append(args, p)
		if hi, ok := prefixEnd(p); ok {
			where = append(where, "spiffe_id < ?")
			args = append(args, hi)
		}
	}
	if n := f.Name; n != "" {
		// The index on name finds the candidates; the suffix must also be whole segments of the path, not
		// reach into the trust domain (spiffe://td/x does not end in the path "/td/x").
		suffix := "/" + n
		slash := s.dialect.Instr("substr(spiffe_id, 10)", "'/'")
		where = append(where, "name = ?", s.dialect.Right("spiffe_id", "?")+" = ?",
			slash+" > 0", "length(spiffe_id) - ? >= 8 + "+slash)
		args = append(args, lastSegment(n), len(suffix), suffix, len(suffix))
	}
	if f.After != (store.EntryKey{}) {
		where = append(where, "(spiffe_id, id) > (?, ?)")
		args = append(args, f.After.SPIFFEID, f.After.ID)
	}
	q := "SELECT " + entryReadColumns + " FROM entries"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY spiffe_id, id"
	if f.Limit > 0 {
		q += " LIMIT ?"
		args = append(args, f.Limit)
	}
	out, err := queryAll(ctx, s.reader, scanEntry, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list entries: %w", err)
	}
	return out, nil
}

// prefixEnd returns the least string greater than every string with prefix p, if there is one.
func prefixEnd(p string) (string, bool) {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

// querier is what reads need from a *sql.DB or *sql.Tx.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

type scanner interface {
	Scan(dest ...any) error
}

func getEntry(ctx context.Context, q querier, id string) (store.Entry, error) {
	e, err := scanEntry(q.QueryRowContext(ctx, "SELECT "+entryReadColumns+" FROM entries WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Entry{}, store.ErrNotFound
	}
	return e, err
}

func scanEntry(row scanner) (store.Entry, error) {
	var (
		e                                  store.Entry
		spiffeID, parentID, nodeSels, sels string
		dns, labels                        string
		x509TTL, jwtTTL                    int64
		createdAt, updatedAt               sql.NullString
		fed                                string
	)
	if err := row.Scan(&e.ID, &spiffeID, &parentID, &nodeSels, &sels, &x509TTL, &jwtTTL, &dns, &labels, &createdAt, &updatedAt, &e.Revision, &e.Source, &fed); err != nil {
		return store.Entry{}, err
	}
	var err error
	if e.FederatesWith, err = decodeTrustDomains(fed); err != nil {
		return store.Entry{}, err
	}
	if e.SPIFFEID, err = parseID(spiffeID); err != nil {
		return store.Entry{}, err
	}
	if e.ParentID, err = parseID(parentID); err != nil {
		return store.Entry{}, err
	}
	if e.NodeSelectors, err = decodeSelectors(nodeSels); err != nil {
		return store.Entry{}, err
	}
	if e.Selectors, err = decodeSelectors(sels); err != nil {
		return store.Entry{}, err
	}
	if err := decodeJSON(dns, &e.DNSNames); err != nil {
		return store.Entry{}, err
	}
	if err := decodeJSON(labels, &e.Labels); err != nil {
		return store.Entry{}, err
	}
	e.X509TTL, e.JWTTTL = durationOf(x509TTL), durationOf(jwtTTL)
	if e.CreatedAt, err = parseTime(createdAt); err != nil {
		return store.Entry{}, err
	}
	if e.UpdatedAt, err = parseTime(updatedAt); err != nil {
		return store.Entry{}, err
	}
	return e, nil
}
