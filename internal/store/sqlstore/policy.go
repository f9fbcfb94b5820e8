package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/kithid/kith/internal/store"
)

const policyColumns = "revision, created_at, status, error, bundle, modules, active, pinned"

// RecordPolicy appends a policy attempt to the history. An ok bundle with activate set becomes the active
// one (pinned as given), and a policy change is recorded so that agents receive it.
func (s *Store) RecordPolicy(ctx context.Context, actor string, p store.PolicyBundle, activate bool) error {
	return s.write(ctx, func(w *Tx) error {
		mods, err := encodeJSON(p.Modules)
		if err != nil {
			return fmt.Errorf("encode policy modules: %w", err)
		}
		if activate {
			if _, err := w.exec("UPDATE policy_bundles SET active = false, pinned = false WHERE active"); err != nil {
				return fmt.Errorf("deactivate policy: %w", err)
			}
		}
		if _, err := w.exec("INSERT INTO policy_bundles ("+policyColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
			p.Revision, timeValue(w.now), p.Status, p.Error, p.Bundle, mods, activate, activate && p.Pinned); err != nil {
			return fmt.Errorf("record policy %s: %w", p.Revision, err)
		}
		if activate {
			if err := w.change(store.KindPolicy, p.Revision, false); err != nil {
				return err
			}
		}
		action := "policy.activate"
		if p.Status == store.PolicyRejected {
			action = "policy.reject"
		}
		return w.audit(actor, action, p.Revision, map[string]any{"status": p.Status, "error": p.Error, "pinned": p.Pinned})
	})
}

// ActivatePolicy makes an earlier ok revision active again (pinned or not), with an audit row.
func (s *Store) ActivatePolicy(ctx context.Context, actor, revision string, pinned bool) (store.PolicyBundle, error) {
	var out store.PolicyBundle
	err := s.write(ctx, func(w *Tx) error {
		var seq int64
		if err := w.queryRow("SELECT seq FROM policy_bundles WHERE revision = ? AND status = 'ok' ORDER BY seq DESC LIMIT 1", revision).Scan(&seq); errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("policy revision %s: %w (see kith policy history)", revision, store.ErrNotFound)
		} else if err != nil {
			return err
		}
		if _, err := w.exec("UPDATE policy_bundles SET active = false, pinned = false WHERE active"); err != nil {
			return err
		}
		if _, err := w.exec("UPDATE policy_bundles SET active = true, pinned = ? WHERE seq = ?", pinned, seq); err != nil {
			return err
		}
		p, err := scanPolicy(w.queryRow("SELECT "+policyColumns+" FROM policy_bundles WHERE seq = ?", seq))
		if err != nil {
			return err
		}
		out = p
		if err := w.change(store.KindPolicy, revision, false); err != nil {
			return err
		}
		action := "policy.activate"
		if pinned {
			action = "policy.rollback"
		}
		return w.audit(actor, action, revision, map[string]any{"pinned": pinned})
	})
	return out, err
}

// UnpinPolicy ends a rollback: the newest ok revision becomes active, not pinned, with one policy.unpin
// audit row. When nothing is pinned it changes nothing, writes no row and returns the active bundle (if any)
// with unpinned false.
func (s *Store) UnpinPolicy(ctx context.Context, actor string) (store.PolicyBundle, bool, error) {
	var out store.PolicyBundle
	var unpinned bool
	err := s.write(ctx, func(w *Tx) error {
		cur, err := scanPolicy(w.queryRow("SELECT " + policyColumns + " FROM policy_bundles WHERE active ORDER BY seq DESC LIMIT 1"))
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if !cur.Pinned {
			out = cur
			return nil
		}
		var seq int64
		if err := w.queryRow("SELECT seq FROM policy_bundles WHERE status = 'ok' ORDER BY seq DESC LIMIT 1").Scan(&seq); err != nil {
			return fmt.Errorf("newest good policy revision: %w", err)
		}
		if _, err := w.exec("UPDATE policy_bundles SET active = false, pinned = false WHERE active"); err != nil {
			return err
		}
		if _, err := w.exec("UPDATE policy_bundles SET active = true, pinned = false WHERE seq = ?", seq); err != nil {
			return err
		}
		if out, err = scanPolicy(w.queryRow("SELECT "+policyColumns+" FROM policy_bundles WHERE seq = ?", seq)); err != nil {
			return err
		}
		if err := w.change(store.KindPolicy, out.Revision, false); err != nil {
			return err
		}
		unpinned = true
		return w.audit(actor, "policy.unpin", out.Revision, map[string]any{"pinned_was": cur.Revision})
	})
	return out, unpinned, err
}

// ActivePolicy returns the active policy bundle; store.ErrNotFound if none.
func (s *Store) ActivePolicy(ctx context.Context) (store.PolicyBundle, error) {
	p, err := scanPolicy(s.reader.QueryRowContext(ctx, "SELECT "+policyColumns+" FROM policy_bundles WHERE active ORDER BY seq DESC LIMIT 1"))
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("active policy: %w", store.ErrNotFound)
	}
	return p, err
}

// PolicyHistory returns the newest limit policy attempts, newest first (without bundle bytes).
func (s *Store) PolicyHistory(ctx context.Context, limit int) ([]store.PolicyBundle, error) {
	if limit <= 0 {
		limit = 50
	}
	rows, err := s.reader.QueryContext(ctx, "SELECT "+policyColumns+" FROM policy_bundles ORDER BY seq DESC LIMIT ?", limit)
	if err != nil {
		return nil, fmt.Errorf("list policy history: %w", err)
	}
	defer rows.Close()
	var out []store.PolicyBundle
	for rows.Next() {
		p, err := scanPolicy(rows)
		if err != nil {
			return nil, err
		}
		p.Bundle, p.Modules = nil, nil
		out = append(out, p)
	}
	return out, rows.Err()
}

func scanPolicy(r scanner) (store.PolicyBundle, error) {
	var p store.PolicyBundle
	var created sql.NullString
	var mods sql.NullString
	if err := r.Scan(&p.Revision, &created, &p.Status, &p.Error, &p.Bundle, &mods, &p.Active, &p.Pinned); err != nil {
		return p, err
	}
	var err error
	if p.CreatedAt, err = parseTime(created); err != nil {
		return p, err
	}
	if mods.Valid && mods.String != "" {
		if err := decodeJSON(mods.String, &p.Modules); err != nil {
			return p, fmt.Errorf("decode policy modules: %w", err)
		}
	}
	return p, nil
}

// SetAgentPolicy records the policy revision an agent reports; since changes only with the revision.
func (s *Store) SetAgentPolicy(ctx context.Context, agentID, revision, errText string) error {
	return s.write(ctx, func(w *Tx) error {
		_, err := w.exec(`INSERT INTO agent_policy (agent_id, revision, since, error) VALUES (?, ?, ?, ?)
			ON CONFLICT (agent_id) DO UPDATE SET error = excluded.error,
				since = CASE WHEN agent_policy.revision = excluded.revision THEN agent_policy.since ELSE excluded.since END,
				revision = excluded.revision`, agentID, revision, timeValue(w.now), errText)
		if err != nil {
			return fmt.Errorf("record policy of agent %s: %w", agentID, err)
		}
		return nil
	})
}

// AgentPolicies returns what every agent reported, by agent ID.
func (s *Store) AgentPolicies(ctx context.Context) ([]store.AgentPolicy, error) {
	rows, err := s.reader.QueryContext(ctx, "SELECT agent_id, revision, since, error FROM agent_policy ORDER BY agent_id")
	if err != nil {
		return nil, fmt.Errorf("list agent policies: %w", err)
	}
	defer rows.Close()
	var out []store.AgentPolicy
	for rows.Next() {
		var a store.AgentPolicy
		var since sql.NullString
		if err := rows.Scan(&a.AgentID, &a.Revision, &since, &a.Error); err != nil {
			return nil, err
		}
		if a.Since, err = parseTime(since); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}
