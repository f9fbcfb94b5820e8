package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/internal/store"
)

const authorityColumns = "id, kind, state, key_id, cert_der, public_key, parent_id, not_before, not_after, created_at, activated_at, retired_at, owner"

type authorityDetail struct {
	ID          string `json:"id"`
	Kind        string `json:"kind"`
	State       string `json:"state"`
	KeyID       string `json:"key_id"`
	ParentID    string `json:"parent_id,omitempty"`
	Owner       string `json:"owner,omitempty"`
	NotBefore   string `json:"not_before,omitempty"`
	NotAfter    string `json:"not_after,omitempty"`
	ActivatedAt string `json:"activated_at,omitempty"`
	RetiredAt   string `json:"retired_at,omitempty"`
}

// ListAuthorities returns every CA authority, ordered by creation time then ID.
func (s *Store) ListAuthorities(ctx context.Context) ([]ca.Authority, error) {
	out, err := queryAll(ctx, s.reader, scanAuthority, "SELECT "+authorityColumns+" FROM authorities ORDER BY created_at, id")
	if err != nil {
		return nil, fmt.Errorf("list authorities: %w", err)
	}
	return out, nil
}

// PutAuthorities inserts or replaces (by ID) the given authorities in one transaction with one revision,
// one change per authority and a single audit row for action whose target lists the IDs and whose detail
// lists the authorities (never key material beyond the key manager's key ID). An empty list does nothing.
func (s *Store) PutAuthorities(ctx context.Context, actor, action string, auths []ca.Authority) error {
	if len(auths) == 0 {
		return nil
	}
	ids := make([]string, len(auths))
	details := make([]authorityDetail, len(auths))
	for i, a := range auths {
		if a.ID == "" {
			return errors.New("put authorities: authority has no id")
		}
		ids[i] = a.ID
		details[i] = authorityDetail{
			ID: a.ID, Kind: string(a.Kind), State: string(a.State), KeyID: a.KeyID, ParentID: a.ParentID, Owner: a.Owner,
			NotBefore: timeString(a.NotBefore), NotAfter: timeString(a.NotAfter),
			ActivatedAt: timeString(a.ActivatedAt), RetiredAt: timeString(a.RetiredAt),
		}
	}
	err := s.write(ctx, func(w *Tx) error {
		for _, a := range auths {
			if _, err := w.exec("INSERT INTO authorities ("+authorityColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"+
				" ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, state = excluded.state, key_id = excluded.key_id,"+
				" cert_der = excluded.cert_der, public_key = excluded.public_key, parent_id = excluded.parent_id,"+
				" not_before = excluded.not_before, not_after = excluded.not_after, created_at = excluded.created_at,"+
				" activated_at = excluded.activated_at, retired_at = excluded.retired_at, owner = excluded.owner",
				a.ID, string(a.Kind), string(a.State), a.KeyID, blobValue(a.CertDER), blobValue(a.PublicKey), a.ParentID,
				timeValue(a.NotBefore), timeValue(a.NotAfter), timeValue(a.CreatedAt), timeValue(a.ActivatedAt), timeValue(a.RetiredAt), a.Owner); err != nil {
				return fmt.Errorf("put authority %s: %w", a.ID, err)
			}
			if err := w.change(store.KindAuthority, a.ID, false); err != nil {
				return err
			}
		}
		return w.audit(actor, action, strings.Join(ids, ","), map[string]any{"authorities": details})
	})
	if err != nil {
		return fmt.Errorf("put authorities: %w", err)
	}
	return nil
}

func scanAuthority(row scanner) (ca.Authority, error) {
	var (
		a                              ca.Authority
		kind, state                    string
		notBefore, notAfter, createdAt sql.NullString
		activatedAt, retiredAt         sql.NullString
		err                            error
	)
	if err := row.Scan(&a.ID, &kind, &state, &a.KeyID, &a.CertDER, &a.PublicKey, &a.ParentID,
		&notBefore, &notAfter, &createdAt, &activatedAt, &retiredAt, &a.Owner); err != nil {
		return ca.Authority{}, err
	}
	a.Kind, a.State = ca.AuthorityKind(kind), ca.AuthorityState(state)
	a.CertDER, a.PublicKey = nilIfEmpty(a.CertDER), nilIfEmpty(a.PublicKey)
	for _, f := range []struct {
		dst *time.Time
		src sql.NullString
	}{{&a.NotBefore, notBefore}, {&a.NotAfter, notAfter}, {&a.CreatedAt, createdAt}, {&a.ActivatedAt, activatedAt}, {&a.RetiredAt, retiredAt}} {
		if *f.dst, err = parseTime(f.src); err != nil {
			return ca.Authority{}, err
		}
	}
	return a, nil
}
