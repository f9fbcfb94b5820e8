package sqlstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/internal/store"
)

// CreateGrant stores a grant (ID assigned as g-<hex> when empty, CreatedAt set) with a grant.create audit row.
func (s *Store) CreateGrant(ctx context.Context, actor string, g grant.Grant) (grant.Grant, error) {
	if g.ID == "" {
		b := make([]byte, 6)
		if _, err := rand.Read(b); err != nil {
			return grant.Grant{}, fmt.Errorf("grant id: %w", err)
		}
		g.ID = "g-" + hex.EncodeToString(b)
	}
	err := s.write(ctx, func(w *Tx) error {
		g.CreatedAt = w.now
		if err := w.putGrant(g); err != nil {
			return err
		}
		return w.audit(actor, "grant.create", g.ID, g)
	})
	if err != nil {
		return grant.Grant{}, err
	}
	return g, nil
}

// ReplaceGrantsFromSource replaces every grant whose Source starts with prefix (e.g. "git:") with grants,
// in one transaction (used for grants that come from a policy repository), audited as grant.sync with source
// (e.g. "git:<sha>", the commit they come from) as the target.
func (s *Store) ReplaceGrantsFromSource(ctx context.Context, actor, prefix, source string, grants []grant.Grant) error {
	return s.write(ctx, func(w *Tx) error {
		rows, err := w.tx.QueryContext(w.ctx, "SELECT id FROM grants WHERE substr(source, 1, ?) = ?", len(prefix), prefix)
		if err != nil {
			return fmt.Errorf("list grants from %s: %w", prefix, err)
		}
		var old []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			old = append(old, id)
		}
		rows.Close()
		keep := map[string]bool{}
		for _, g := range grants {
			keep[g.ID] = true
			if g.CreatedAt.IsZero() {
				g.CreatedAt = w.now
			}
			if err := w.putGrant(g); err != nil {
				return err
			}
		}
		for _, id := range old {
			if keep[id] {
				continue
			}
			if _, err := w.exec("DELETE FROM grants WHERE id = ?", id); err != nil {
				return fmt.Errorf("delete grant %s: %w", id, err)
			}
			if err := w.change(store.KindGrant, id, true); err != nil {
				return err
			}
		}
		return w.audit(actor, "grant.sync", source, map[string]any{"grants": len(grants), "replaced": len(old)})
	})
}

func (w *Tx) putGrant(g grant.Grant) error {
	rev, err := w.bump()
	if err != nil {
		return err
	}
	doc, err := encodeJSON(g)
	if err != nil {
		return fmt.Errorf("encode grant: %w", err)
	}
	if _, err := w.exec(`INSERT INTO grants (id, caller, target, source, doc, created_at, expires_at, revision)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET caller = excluded.caller, target = excluded.target, source = excluded.source,
			doc = excluded.doc, expires_at = excluded.expires_at, revision = excluded.revision`,
		g.ID, g.Caller, g.Target, g.Source, doc, timeValue(g.CreatedAt), timeValue(g.ExpiresAt), rev); err != nil {
		return fmt.Errorf("store grant %s: %w", g.ID, err)
	}
	return w.change(store.KindGrant, g.ID, false)
}

// DeleteGrant removes a grant and returns it, with a grant.revoke audit row; store.ErrNotFound if absent.
func (s *Store) DeleteGrant(ctx context.Context, actor, id string) (grant.Grant, error) {
	var g grant.Grant
	err := s.write(ctx, func(w *Tx) error {
		var err error
		if g, err = scanDoc[grant.Grant](w.queryRow("SELECT doc FROM grants WHERE id = ?", id), "grant", id); err != nil {
			return err
		}
		if _, err := w.exec("DELETE FROM grants WHERE id = ?", id); err != nil {
			return fmt.Errorf("delete grant %s: %w", id, err)
		}
		if err := w.change(store.KindGrant, id, true); err != nil {
			return err
		}
		return w.audit(actor, "grant.revoke", id, g)
	})
	return g, err
}

// GetGrant returns one grant; store.ErrNotFound if absent.
func (s *Store) GetGrant(ctx context.Context, id string) (grant.Grant, error) {
	return scanDoc[grant.Grant](s.reader.QueryRowContext(ctx, "SELECT doc FROM grants WHERE id = ?", id), "grant", id)
}

// ListGrants returns the grants ordered by target, caller and ID, at most f.Limit after f.After.
func (s *Store) ListGrants(ctx context.Context, f store.GrantFilter) ([]grant.Grant, error) {
	q, args := "SELECT doc FROM grants", []any{}
	if f.After != (store.GrantKey{}) {
		q += " WHERE (target, caller, id) > (?, ?, ?)"
		args = append(args, f.After.Target, f.After.Caller, f.After.ID)
	}
	q += " ORDER BY target, caller, id"
	if f.Limit > 0 {
		q += " LIMIT ?"
		args = append(args, f.Limit)
	}
	out, err := queryAll(ctx, s.reader, func(r scanner) (grant.Grant, error) { return scanDoc[grant.Grant](r, "grant", "") }, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list grants: %w", err)
	}
	return out, nil
}

// SetTargetMode sets a target's enforcement mode (enforce removes the row), with a target.mode audit row.
func (s *Store) SetTargetMode(ctx context.Context, actor, target string, mode grant.Mode) error {
	return s.write(ctx, func(w *Tx) error {
		rev, err := w.bump()
		if err != nil {
			return err
		}
		if mode == grant.ModeEnforce {
			_, err = w.exec("DELETE FROM target_modes WHERE target = ?", target)
		} else {
			_, err = w.exec(`INSERT INTO target_modes (target, mode, updated_at, revision) VALUES (?, ?, ?, ?)
				ON CONFLICT (target) DO UPDATE SET mode = excluded.mode, updated_at = excluded.updated_at, revision = excluded.revision`,
				target, string(mode), timeValue(w.now), rev)
		}
		if err != nil {
			return fmt.Errorf("set mode of %s: %w", target, err)
		}
		if err := w.change(store.KindMode, target, mode == grant.ModeEnforce); err != nil {
			return err
		}
		return w.audit(actor, "target.mode", target, map[string]string{"mode": string(mode)})
	})
}

// TargetModes returns the targets not in enforce mode.
func (s *Store) TargetModes(ctx context.Context) (map[string]grant.Mode, error) {
	rows, err := s.reader.QueryContext(ctx, "SELECT target, mode FROM target_modes")
	if err != nil {
		return nil, fmt.Errorf("list target modes: %w", err)
	}
	defer rows.Close()
	out := map[string]grant.Mode{}
	for rows.Next() {
		var t, m string
		if err := rows.Scan(&t, &m); err != nil {
			return nil, fmt.Errorf("list target modes: %w", err)
		}
		out[t] = grant.Mode(m)
	}
	return out, rows.Err()
}
