package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/internal/store"
)

// CanonTime is t as the store keeps it: UTC, no monotonic reading. The zero time stays zero.
func CanonTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.Round(0).UTC()
}

// timeValue is the column value for t: UTC RFC 3339 with nanoseconds, or NULL for the zero time.
func timeValue(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func parseTime(ns sql.NullString) (time.Time, error) {
	if !ns.Valid || ns.String == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, ns.String)
	if err != nil {
		return time.Time{}, fmt.Errorf("parse stored time %q: %w", ns.String, err)
	}
	return t.UTC(), nil
}

// parseID parses a stored SPIFFE ID; ” is the zero ID.
func parseID(s string) (spiffeid.ID, error) {
	if s == "" {
		return spiffeid.ID{}, nil
	}
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("parse stored spiffe id %q: %w", s, err)
	}
	return id, nil
}

// selectorJSON is the stored form of a selector: explicit fields, so any type, key or value reads back
// exactly.
type selectorJSON struct {
	Type  string `json:"type"`
	Key   string `json:"key"`
	Value string `json:"value"`
}

// encodeSelectors encodes selectors as a JSON array; nil encodes as null so that it reads back as nil.
func encodeSelectors(sels []attestation.Selector) (string, error) {
	var out []selectorJSON
	if sels != nil {
		out = make([]selectorJSON, len(sels))
		for i, s := range sels {
			out[i] = selectorJSON(s)
		}
	}
	b, err := json.Marshal(out)
	return string(b), err
}

func decodeSelectors(s string) ([]attestation.Selector, error) {
	var in []selectorJSON
	if err := json.Unmarshal([]byte(s), &in); err != nil {
		return nil, fmt.Errorf("decode stored selectors: %w", err)
	}
	if in == nil {
		return nil, nil
	}
	out := make([]attestation.Selector, len(in))
	for i, s := range in {
		out[i] = attestation.Selector(s)
	}
	return out, nil
}

// encodeJSON encodes v for a JSON column (nil slices and maps as null, so they read back as nil).
func encodeJSON(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

func decodeJSON(s string, v any) error {
	if err := json.Unmarshal([]byte(s), v); err != nil {
		return fmt.Errorf("decode stored json: %w", err)
	}
	return nil
}

// blobValue stores an empty byte slice as NULL.
func blobValue(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// nilIfEmpty reads back a NULL or empty blob as nil.
func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// timeString is t for audit details: RFC 3339 UTC, or "" for the zero time.
func timeString(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func durationOf(ns int64) time.Duration { return time.Duration(ns) }

// scanDoc reads the JSON document column of row into a T: what and key (if known) name it in errors, and a
// missing row is store.ErrNotFound.
func scanDoc[T any](row scanner, what, key string) (T, error) {
	var (
		doc string
		v   T
	)
	if key != "" {
		what += " " + key
	}
	if err := row.Scan(&doc); errors.Is(err, sql.ErrNoRows) {
		return v, fmt.Errorf("%s: %w", what, store.ErrNotFound)
	} else if err != nil {
		return v, fmt.Errorf("%s: %w", what, err)
	}
	if err := decodeJSON(doc, &v); err != nil {
		return v, fmt.Errorf("decode %s: %w", what, err)
	}
	return v, nil
}

// queryAll runs query on q and scans every row with scan: an empty slice, not nil, when there are none.
func queryAll[T any](ctx context.Context, q Querier, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
