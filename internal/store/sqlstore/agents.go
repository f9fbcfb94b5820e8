package sqlstore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/internal/store"
)

const (
	tokenColumns = "id, name, hash, created_at, expires_at, used_at, used_by"
	agentColumns = "id, attestation_type, selectors, serial_number, expires_at, created_at, updated_at, evicted, banned"
)

// newTokenID returns a short random public identifier for a join token.
func newTokenID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

type tokenDetail struct {
	ID        string `json:"id"`
	Name      string `json:"name,omitempty"`
	ExpiresAt string `json:"expires_at,omitempty"`
}

// CreateJoinToken stores a join token. The ID is assigned when empty and CreatedAt is set to the store's
// clock. t.Hash must be the SHA-256 of the secret; the secret itself is never stored. A non-empty Name must
// be unique among tokens (store.ErrAlreadyExists).
func (s *Store) CreateJoinToken(ctx context.Context, actor string, t store.JoinToken) (store.JoinToken, error) {
	if len(t.Hash) != sha256.Size {
		return store.JoinToken{}, fmt.Errorf("create join token: hash is %d bytes, want the %d-byte sha-256 of the secret", len(t.Hash), sha256.Size)
	}
	if t.ID == "" {
		t.ID = newTokenID()
	}
	err := s.write(ctx, func(w *Tx) error {
		if t.Name != "" {
			if err := w.checkTokenName(t.Name); err != nil {
				return err
			}
		}
		t.CreatedAt = w.now
		t.ExpiresAt = CanonTime(t.ExpiresAt)
		t.UsedAt = CanonTime(t.UsedAt)
		var name any
		if t.Name != "" {
			name = t.Name
		}
		res, err := w.exec("INSERT INTO join_tokens ("+tokenColumns+") VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
			t.ID, name, t.Hash, timeValue(t.CreatedAt), timeValue(t.ExpiresAt), timeValue(t.UsedAt), t.UsedBy.String())
		if err != nil {
			return fmt.Errorf("create join token %s: %w", t.ID, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("create join token %s: %w", t.ID, err)
		} else if n == 0 {
			return fmt.Errorf("create join token: id %s or its secret is already in use: %w", t.ID, store.ErrAlreadyExists)
		}
		if err := w.change(store.KindToken, t.ID, false); err != nil {
			return err
		}
		return w.audit(actor, "token.create", t.ID, tokenDetail{ID: t.ID, Name: t.Name, ExpiresAt: timeString(t.ExpiresAt)})
	})
	if err != nil {
		return store.JoinToken{}, err
	}
	return t, nil
}

// ListJoinTokens returns every join token, used or not, oldest first.
func (s *Store) ListJoinTokens(ctx context.Context) ([]store.JoinToken, error) {
	out, err := queryAll(ctx, s.reader, scanToken, "SELECT "+tokenColumns+" FROM join_tokens ORDER BY created_at, id")
	if err != nil {
		return nil, fmt.Errorf("list join tokens: %w", err)
	}
	return out, nil
}

// LookupJoinToken returns the join token whose secret hashes to hash, used or not, without changing it;
// store.ErrTokenInvalid when there is none. It only tells the caller which token is meant: UseJoinToken
// decides, atomically, whether it may still be redeemed.
func (s *Store) LookupJoinToken(ctx context.Context, hash []byte) (store.JoinToken, error) {
	t, err := scanToken(s.reader.QueryRowContext(ctx, "SELECT "+tokenColumns+" FROM join_tokens WHERE hash = ?", hash))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.JoinToken{}, store.ErrTokenInvalid
	case err != nil:
		return store.JoinToken{}, fmt.Errorf("look up join token: %w", err)
	}
	return t, nil
}

func scanToken(row scanner) (store.JoinToken, error) {
	var (
		t                            store.JoinToken
		name                         sql.NullString
		createdAt, expiresAt, usedAt sql.NullString
		usedBy                       string
		err                          error
	)
	if err := row.Scan(&t.ID, &name, &t.Hash, &createdAt, &expiresAt, &usedAt, &usedBy); err != nil {
		return store.JoinToken{}, err
	}
	t.Name = name.String
	if t.CreatedAt, err = parseTime(createdAt); err != nil {
		return store.JoinToken{}, err
	}
	if t.ExpiresAt, err = parseTime(expiresAt); err != nil {
		return store.JoinToken{}, err
	}
	if t.UsedAt, err = parseTime(usedAt); err != nil {
		return store.JoinToken{}, err
	}
	if t.UsedBy, err = parseID(usedBy); err != nil {
		return store.JoinToken{}, err
	}
	return t, nil
}

type agentDetail struct {
	ID              string   `json:"id"`
	AttestationType string   `json:"attestation_type,omitempty"`
	Selectors       []string `json:"selectors,omitempty"`
	SerialNumber    string   `json:"serial_number,omitempty"`
	ExpiresAt       string   `json:"expires_at,omitempty"`
	Evicted         bool     `json:"evicted,omitempty"`
	Banned          bool     `json:"banned,omitempty"`
	TokenID         string   `json:"token_id,omitempty"`
	TokenName       string   `json:"token_name,omitempty"`
}

func detailOfAgent(a store.Agent) agentDetail {
	return agentDetail{
		ID:              a.ID.String(),
		AttestationType: a.AttestationType,
		Selectors:       attestation.Strings(a.Selectors),
		SerialNumber:    a.SerialNumber,
		ExpiresAt:       timeString(a.ExpiresAt),
		Evicted:         a.Evicted,
		Banned:          a.Banned,
	}
}

// UseJoinToken redeems the join token whose secret hashes to hash, in one transaction: it refuses with
// store.ErrTokenInvalid a token that is unknown, already used or expired at now (a zero ExpiresAt never
// expires), marks it used by agent.ID at now, inserts or replaces the agent record (UpdatedAt = now;
// CreatedAt kept from an existing record, else now) and appends one agent.attest audit row.
func (s *Store) UseJoinToken(ctx context.Context, hash []byte, now time.Time, agent store.Agent) (store.JoinToken, store.Agent, error) {
	if agent.ID.IsZero() {
		return store.JoinToken{}, store.Agent{}, errors.New("use join token: agent has no spiffe id")
	}
	now = CanonTime(now)
	var tok store.JoinToken
	err := s.write(ctx, func(w *Tx) error {
		var err error
		tok, err = scanToken(w.queryRow("SELECT "+tokenColumns+" FROM join_tokens WHERE hash = ?", hash))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return store.ErrTokenInvalid
		case err != nil:
			return fmt.Errorf("use join token: %w", err)
		case !tok.UsedAt.IsZero():
			return store.ErrTokenInvalid
		case !tok.ExpiresAt.IsZero() && !now.Before(tok.ExpiresAt):
			return store.ErrTokenInvalid
		}
		tok.UsedAt, tok.UsedBy = now, agent.ID
		if _, err := w.exec("UPDATE join_tokens SET used_at = ?, used_by = ? WHERE id = ?", timeValue(now), agent.ID.String(), tok.ID); err != nil {
			return fmt.Errorf("use join token %s: %w", tok.ID, err)
		}
		if err := w.change(store.KindToken, tok.ID, false); err != nil {
			return err
		}
		if agent, err = w.putAgent(agent, now); err != nil {
			return err
		}
		d := detailOfAgent(agent)
		d.TokenID, d.TokenName = tok.ID, tok.Name
		return w.audit("agent:"+agent.ID.String(), "agent.attest", agent.ID.String(), d)
	})
	if err != nil {
		return store.JoinToken{}, store.Agent{}, err
	}
	return tok, agent, nil
}

// RevokeJoinToken deletes the unused join token id, expired or not, so that its secret is from then on
// unknown, and returns it as it was; store.ErrNotFound if there is none and store.ErrFailedPrecondition if
// it was used (revoking it would change nothing: evict or ban its agent instead).
func (s *Store) RevokeJoinToken(ctx context.Context, actor, id string) (store.JoinToken, error) {
	var tok store.JoinToken
	err := s.write(ctx, func(w *Tx) error {
		var err error
		tok, err = scanToken(w.queryRow("SELECT "+tokenColumns+" FROM join_tokens WHERE id = ?", id))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("revoke join token %s: %w (see kith token list)", id, store.ErrNotFound)
		case err != nil:
			return fmt.Errorf("revoke join token %s: %w", id, err)
		case !tok.UsedAt.IsZero():
			return fmt.Errorf("revoke join token %s: it was already used by %s and cannot be used again; to cut that agent off, evict or ban it (kith agents ban %s): %w",
				id, tok.UsedBy, tok.UsedBy, store.ErrFailedPrecondition)
		}
		if _, err := w.exec("DELETE FROM join_tokens WHERE id = ?", id); err != nil {
			return fmt.Errorf("revoke join token %s: %w", id, err)
		}
		if err := w.change(store.KindToken, id, true); err != nil {
			return err
		}
		return w.audit(actor, "token.revoke", id, tokenDetail{ID: tok.ID, Name: tok.Name, ExpiresAt: timeString(tok.ExpiresAt)})
	})
	if err != nil {
		return store.JoinToken{}, err
	}
	return tok, nil
}

// checkTokenName refuses a name for a new token while it still stands for something: an earlier token with
// the name that is neither used nor expired, or the agent such a token joined while it is not evicted. A
// name that is free again lets a node re-join under the same agent SPIFFE ID (it derives from the name).
func (w *Tx) checkTokenName(name string) error {
	rows, err := w.tx.QueryContext(w.ctx, "SELECT "+tokenColumns+" FROM join_tokens WHERE name = ?", name)
	if err != nil {
		return fmt.Errorf("create join token %q: %w", name, err)
	}
	var earlier []store.JoinToken
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			rows.Close()
			return fmt.Errorf("create join token %q: %w", name, err)
		}
		earlier = append(earlier, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("create join token %q: %w", name, err)
	}
	for _, t := range earlier {
		if t.UsedAt.IsZero() {
			if t.ExpiresAt.IsZero() || w.now.Before(t.ExpiresAt) {
				return fmt.Errorf("create join token: token %s is already named %q and not used yet: use it, or pick another name: %w", t.ID, name, store.ErrAlreadyExists)
			}
			continue
		}
		var evicted bool
		switch err := w.queryRow("SELECT evicted FROM agents WHERE id = ?", t.UsedBy.String()).Scan(&evicted); {
		case errors.Is(err, sql.ErrNoRows) || (err == nil && evicted):
		case err != nil:
			return fmt.Errorf("create join token %q: %w", name, err)
		default:
			return fmt.Errorf("create join token: agent %s joined with token %s named %q and is still active: evict it first (kith agents evict %s) and a new token with this name will give the node the same identity: %w",
				t.UsedBy, t.ID, name, t.UsedBy, store.ErrAlreadyExists)
		}
	}
	return nil
}

// putAgent inserts or replaces a, keeping CreatedAt and Banned of an existing record, and records the change.
func (w *Tx) putAgent(a store.Agent, now time.Time) (store.Agent, error) {
	var created sql.NullString
	var banned bool
	switch err := w.queryRow("SELECT created_at, banned FROM agents WHERE id = ?", a.ID.String()).Scan(&created, &banned); {
	case err == nil:
		a.Banned = banned
		t, err := parseTime(created)
		if err != nil {
			return store.Agent{}, fmt.Errorf("put agent %s: %w", a.ID, err)
		}
		a.CreatedAt = t
	case errors.Is(err, sql.ErrNoRows):
		if a.CreatedAt.IsZero() {
			a.CreatedAt = now
		}
	default:
		return store.Agent{}, fmt.Errorf("put agent %s: %w", a.ID, err)
	}
	a.CreatedAt, a.UpdatedAt, a.ExpiresAt = CanonTime(a.CreatedAt), now, CanonTime(a.ExpiresAt)
	sels, err := encodeSelectors(a.Selectors)
	if err != nil {
		return store.Agent{}, fmt.Errorf("put agent %s: %w", a.ID, err)
	}
	if _, err := w.exec("INSERT INTO agents ("+agentColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"+
		" ON CONFLICT (id) DO UPDATE SET attestation_type = excluded.attestation_type, selectors = excluded.selectors,"+
		" serial_number = excluded.serial_number, expires_at = excluded.expires_at, created_at = excluded.created_at,"+
		" updated_at = excluded.updated_at, evicted = excluded.evicted, banned = excluded.banned",
		a.ID.String(), a.AttestationType, sels, a.SerialNumber, timeValue(a.ExpiresAt),
		timeValue(a.CreatedAt), timeValue(a.UpdatedAt), a.Evicted, a.Banned); err != nil {
		return store.Agent{}, fmt.Errorf("put agent %s: %w", a.ID, err)
	}
	if err := w.change(store.KindAgent, a.ID.String(), false); err != nil {
		return store.Agent{}, err
	}
	return a, nil
}

// UpsertAgent inserts or replaces the agent record (CreatedAt kept from an existing record, UpdatedAt set to
// the store's clock) with an audit row for action, e.g. agent.renew.
func (s *Store) UpsertAgent(ctx context.Context, actor, action string, a store.Agent) (store.Agent, error) {
	if a.ID.IsZero() {
		return store.Agent{}, errors.New("upsert agent: agent has no spiffe id")
	}
	err := s.write(ctx, func(w *Tx) error {
		var err error
		if a, err = w.putAgent(a, w.now); err != nil {
			return err
		}
		return w.audit(actor, action, a.ID.String(), detailOfAgent(a))
	})
	if err != nil {
		return store.Agent{}, err
	}
	return a, nil
}

// GetAgent returns the agent with the given ID, or store.ErrNotFound.
func (s *Store) GetAgent(ctx context.Context, id spiffeid.ID) (store.Agent, error) {
	a, err := getAgent(ctx, s.reader, id)
	if err != nil {
		return store.Agent{}, fmt.Errorf("get agent %s: %w", id, err)
	}
	return a, nil
}

func getAgent(ctx context.Context, q querier, id spiffeid.ID) (store.Agent, error) {
	a, err := scanAgent(q.QueryRowContext(ctx, "SELECT "+agentColumns+" FROM agents WHERE id = ?", id.String()))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Agent{}, store.ErrNotFound
	}
	return a, err
}

// ListAgents returns every agent, evicted or not, ordered by ID.
func (s *Store) ListAgents(ctx context.Context) ([]store.Agent, error) {
	out, err := queryAll(ctx, s.reader, scanAgent, "SELECT "+agentColumns+" FROM agents ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	return out, nil
}

// EvictAgent marks the agent evicted and returns it; store.ErrNotFound if there is none.
func (s *Store) EvictAgent(ctx context.Context, actor string, id spiffeid.ID) (store.Agent, error) {
	var a store.Agent
	err := s.write(ctx, func(w *Tx) error {
		var err error
		if a, err = getAgent(w.ctx, w.tx, id); err != nil {
			return fmt.Errorf("evict agent %s: %w", id, err)
		}
		a.Evicted, a.UpdatedAt = true, w.now
		if _, err := w.exec("UPDATE agents SET evicted = true, updated_at = ? WHERE id = ?", timeValue(a.UpdatedAt), id.String()); err != nil {
			return fmt.Errorf("evict agent %s: %w", id, err)
		}
		if err := w.change(store.KindAgent, id.String(), false); err != nil {
			return err
		}
		return w.audit(actor, "agent.evict", id.String(), detailOfAgent(a))
	})
	if err != nil {
		return store.Agent{}, err
	}
	return a, nil
}

// BanAgent marks the agent banned and evicted and returns it; store.ErrNotFound if there is none.
func (s *Store) BanAgent(ctx context.Context, actor string, id spiffeid.ID) (store.Agent, error) {
	return s.setBanned(ctx, actor, id, true)
}

// UnbanAgent clears the agent's ban and returns it (still evicted: it attests again with a new join token);
// store.ErrNotFound if there is none.
func (s *Store) UnbanAgent(ctx context.Context, actor string, id spiffeid.ID) (store.Agent, error) {
	return s.setBanned(ctx, actor, id, false)
}

func (s *Store) setBanned(ctx context.Context, actor string, id spiffeid.ID, banned bool) (store.Agent, error) {
	op, action := "ban", "agent.ban"
	if !banned {
		op, action = "unban", "agent.unban"
	}
	var a store.Agent
	err := s.write(ctx, func(w *Tx) error {
		var err error
		if a, err = getAgent(w.ctx, w.tx, id); err != nil {
			return fmt.Errorf("%s agent %s: %w", op, id, err)
		}
		a.Banned, a.UpdatedAt = banned, w.now
		a.Evicted = a.Evicted || banned
		if _, err := w.exec("UPDATE agents SET banned = ?, evicted = ?, updated_at = ? WHERE id = ?", a.Banned, a.Evicted, timeValue(a.UpdatedAt), id.String()); err != nil {
			return fmt.Errorf("%s agent %s: %w", op, id, err)
		}
		if err := w.change(store.KindAgent, id.String(), false); err != nil {
			return err
		}
		return w.audit(actor, action, id.String(), detailOfAgent(a))
	})
	if err != nil {
		return store.Agent{}, err
	}
	return a, nil
}

func scanAgent(row scanner) (store.Agent, error) {
	var (
		a                               store.Agent
		id, sels                        string
		expiresAt, createdAt, updatedAt sql.NullString
		err                             error
	)
	if err := row.Scan(&id, &a.AttestationType, &sels, &a.SerialNumber, &expiresAt, &createdAt, &updatedAt, &a.Evicted, &a.Banned); err != nil {
		return store.Agent{}, err
	}
	if a.ID, err = parseID(id); err != nil {
		return store.Agent{}, err
	}
	if a.Selectors, err = decodeSelectors(sels); err != nil {
		return store.Agent{}, err
	}
	if a.ExpiresAt, err = parseTime(expiresAt); err != nil {
		return store.Agent{}, err
	}
	if a.CreatedAt, err = parseTime(createdAt); err != nil {
		return store.Agent{}, err
	}
	if a.UpdatedAt, err = parseTime(updatedAt); err != nil {
		return store.Agent{}, err
	}
	return a, nil
}
