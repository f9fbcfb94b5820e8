package sqlstore

import (
	"context"
	"fmt"
	"maps"
	"slices"
)

// SetPolicyLabels replaces the identity labels supplied by the policy repository (SPIFFE ID → labels).
// They belong to the policy commit recorded with RecordPolicy, whose audit row covers them: no audit row
// and no revision of their own.
func (s *Store) SetPolicyLabels(ctx context.Context, labels map[string]map[string]string) error {
	return s.write(ctx, func(w *Tx) error {
		if _, err := w.exec("DELETE FROM policy_labels"); err != nil {
			return fmt.Errorf("replace policy labels: %w", err)
		}
		for _, id := range slices.Sorted(maps.Keys(labels)) {
			doc, err := encodeJSON(labels[id])
			if err != nil {
				return fmt.Errorf("encode policy labels of %s: %w", id, err)
			}
			if _, err := w.exec("INSERT INTO policy_labels (spiffe_id, labels) VALUES (?, ?)", id, doc); err != nil {
				return fmt.Errorf("store policy labels of %s: %w", id, err)
			}
		}
		return nil
	})
}

// PolicyLabels returns the identity labels last set with SetPolicyLabels (empty if none).
func (s *Store) PolicyLabels(ctx context.Context) (map[string]map[string]string, error) {
	rows, err := s.reader.QueryContext(ctx, "SELECT spiffe_id, labels FROM policy_labels")
	if err != nil {
		return nil, fmt.Errorf("list policy labels: %w", err)
	}
	defer rows.Close()
	out := map[string]map[string]string{}
	for rows.Next() {
		var id, doc string
		if err := rows.Scan(&id, &doc); err != nil {
			return nil, fmt.Errorf("list policy labels: %w", err)
		}
		var l map[string]string
		if err := decodeJSON(doc, &l); err != nil {
			return nil, fmt.Errorf("decode policy labels of %s: %w", id, err)
		}
		out[id] = l
	}
	return out, rows.Err()
}
