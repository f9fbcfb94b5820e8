package sqlstore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/internal/store"
)

func newID(prefix string) (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("new %s id: %w", prefix, err)
	}
	return prefix + hex.EncodeToString(b), nil
}

// userAudit is what the audit log records of a user.
type userAudit struct {
	Name     string            `json:"name"`
	Labels   map[string]string `json:"labels,omitempty"`
	Roles    []string          `json:"roles,omitempty"`
	Disabled bool              `json:"disabled,omitempty"`
	Source   string            `json:"source,omitempty"`
}

func auditOfUser(u store.User) userAudit {
	return userAudit{Name: u.Name, Labels: u.Labels, Roles: u.Roles, Disabled: u.Disabled, Source: u.Source}
}

// CreateUser stores a user with a user.create audit row; store.ErrAlreadyExists if the name is taken.
func (s *Store) CreateUser(ctx context.Context, actor string, u store.User) (store.User, error) {
	if u.Name == "" {
		return store.User{}, errors.New("create user: empty name")
	}
	if u.Source == "" {
		u.Source = "cli"
	}
	err := s.write(ctx, func(w *Tx) error {
		var n int
		if err := w.queryRow("SELECT count(*) FROM users WHERE name = ?", u.Name).Scan(&n); err != nil {
			return fmt.Errorf("create user %s: %w", u.Name, err)
		}
		if n > 0 {
			return fmt.Errorf("user %s: %w", u.Name, store.ErrAlreadyExists)
		}
		u.CreatedAt, u.UpdatedAt = w.now, w.now
		if err := w.putUser(&u); err != nil {
			return err
		}
		return w.audit(actor, "user.create", u.Name, auditOfUser(u))
	})
	if err != nil {
		return store.User{}, err
	}
	return u, nil
}

// UpdateUser replaces a user's labels, roles and disabled flag, with an audit row for action.
func (s *Store) UpdateUser(ctx context.Context, actor, action string, u store.User) (store.User, error) {
	var out store.User
	err := s.write(ctx, func(w *Tx) error {
		old, err := w.getUser(u.Name)
		if err != nil {
			return err
		}
		old.Labels, old.Roles, old.Disabled, old.UpdatedAt = u.Labels, u.Roles, u.Disabled, w.now
		if err := w.putUser(&old); err != nil {
			return err
		}
		out = old
		return w.audit(actor, action, u.Name, auditOfUser(old))
	})
	return out, err
}

func (w *Tx) putUser(u *store.User) error {
	rev, err := w.bump()
	if err != nil {
		return err
	}
	u.Revision = rev
	doc, err := encodeJSON(u)
	if err != nil {
		return fmt.Errorf("encode user: %w", err)
	}
	if _, err := w.exec(`INSERT INTO users (name, doc, revision) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET doc = excluded.doc, revision = excluded.revision`, u.Name, doc, rev); err != nil {
		return fmt.Errorf("store user %s: %w", u.Name, err)
	}
	return w.change(store.KindUser, u.Name, false)
}

func (w *Tx) getUser(name string) (store.User, error) {
	return scanUser(w.queryRow("SELECT doc FROM users WHERE name = ?", name), name)
}

func scanUser(row scanner, name string) (store.User, error) {
	return scanDoc[store.User](row, "user", name)
}

// GetUser returns one user; store.ErrNotFound if absent.
func (s *Store) GetUser(ctx context.Context, name string) (store.User, error) {
	return scanUser(s.reader.QueryRowContext(ctx, "SELECT doc FROM users WHERE name = ?", name), name)
}

// ListUsers returns every user ordered by name.
func (s *Store) ListUsers(ctx context.Context) ([]store.User, error) {
	out, err := queryAll(ctx, s.reader, func(r scanner) (store.User, error) { return scanUser(r, "") }, "SELECT doc FROM users ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return out, nil
}

type codeAudit struct {
	ID        string `json:"id"`
	User      string `json:"user"`
	ExpiresAt string `json:"expires_at,omitempty"`
}

// CreateEnrolmentCode stores an enrolment code of an existing user with a user.code audit row.
func (s *Store) CreateEnrolmentCode(ctx context.Context, actor string, c store.EnrolmentCode) (store.EnrolmentCode, error) {
	if c.ID == "" {
		id, err := newID("c-")
		if err != nil {
			return store.EnrolmentCode{}, err
		}
		c.ID = id
	}
	err := s.write(ctx, func(w *Tx) error {
		if _, err := w.getUser(c.User); err != nil {
			return err
		}
		c.CreatedAt = w.now
		doc, err := encodeJSON(c)
		if err != nil {
			return err
		}
		if _, err := w.exec("INSERT INTO enrolment_codes (id, hash, user_name, doc) VALUES (?, ?, ?, ?)", c.ID, c.Hash, c.User, doc); err != nil {
			return fmt.Errorf("store enrolment code: %w", err)
		}
		if err := w.change(store.KindEnrolment, c.ID, false); err != nil {
			return err
		}
		return w.audit(actor, "user.code", c.User, codeAudit{ID: c.ID, User: c.User, ExpiresAt: c.ExpiresAt.Format(time.RFC3339)})
	})
	if err != nil {
		return store.EnrolmentCode{}, err
	}
	return c, nil
}

type loginAudit struct {
	Login     string `json:"login"`
	Method    string `json:"method"`
	Code      string `json:"code,omitempty"`
	Serial    string `json:"serial,omitempty"`
	ExpiresAt string `json:"expires_at,omitempty"`
}

// UseEnrolmentCode redeems a code and creates the login, in one transaction with a user.login audit row
// whose actor is userPrefix+name (the user's SPIFFE ID).
func (s *Store) UseEnrolmentCode(ctx context.Context, userPrefix string, hash []byte, now time.Time, l store.Login) (store.EnrolmentCode, store.Login, error) {
	now = CanonTime(now)
	var c store.EnrolmentCode
	err := s.write(ctx, func(w *Tx) error {
		var doc string
		if err := w.queryRow("SELECT doc FROM enrolment_codes WHERE hash = ?", hash).Scan(&doc); errors.Is(err, sql.ErrNoRows) {
			return store.ErrCodeInvalid
		} else if err != nil {
			return fmt.Errorf("use enrolment code: %w", err)
		}
		if err := decodeJSON(doc, &c); err != nil {
			return err
		}
		if !c.UsedAt.IsZero() || (!c.ExpiresAt.IsZero() && !now.Before(c.ExpiresAt)) {
			return store.ErrCodeInvalid
		}
		u, err := w.getUser(c.User)
		if err != nil {
			return err
		}
		if u.Disabled {
			return fmt.Errorf("user %s is disabled: %w", u.Name, store.ErrFailedPrecondition)
		}
		c.UsedAt = now
		if doc, err = encodeJSON(c); err != nil {
			return err
		}
		if _, err := w.exec("UPDATE enrolment_codes SET doc = ? WHERE id = ?", doc, c.ID); err != nil {
			return fmt.Errorf("use enrolment code: %w", err)
		}
		if err := w.change(store.KindEnrolment, c.ID, false); err != nil {
			return err
		}
		l.User = c.User
		return w.putLogin(&l, userPrefix+c.User, c.ID)
	})
	if err != nil {
		return store.EnrolmentCode{}, store.Login{}, err
	}
	return c, l, nil
}

func (w *Tx) putLogin(l *store.Login, actor, code string) error {
	if l.ID == "" {
		id, err := newID("l-")
		if err != nil {
			return err
		}
		l.ID = id
	}
	l.CreatedAt = w.now
	doc, err := encodeJSON(l)
	if err != nil {
		return err
	}
	if _, err := w.exec("INSERT INTO user_logins (id, user_name, doc) VALUES (?, ?, ?)", l.ID, l.User, doc); err != nil {
		return fmt.Errorf("store login: %w", err)
	}
	if err := w.change(store.KindLogin, l.ID, false); err != nil {
		return err
	}
	return w.audit(actor, "user.login", l.User, loginAudit{Login: l.ID, Method: l.Method, Code: code, Serial: l.Serial, ExpiresAt: l.ExpiresAt.Format(time.RFC3339)})
}

// CreateLogin stores a login with a user.login audit row.
func (s *Store) CreateLogin(ctx context.Context, actor string, l store.Login) (store.Login, error) {
	err := s.write(ctx, func(w *Tx) error {
		if _, err := w.getUser(l.User); err != nil {
			return err
		}
		return w.putLogin(&l, actor, "")
	})
	if err != nil {
		return store.Login{}, err
	}
	return l, nil
}

// GetLogin returns one login; store.ErrNotFound if absent.
func (s *Store) GetLogin(ctx context.Context, id string) (store.Login, error) {
	return scanDoc[store.Login](s.reader.QueryRowContext(ctx, "SELECT doc FROM user_logins WHERE id = ?", id), "login", id)
}

// RenewLogin moves a login from oldSerial to newSerial. It is not a change (no revision, no audit row).
func (s *Store) RenewLogin(ctx context.Context, id, oldSerial, newSerial string, now time.Time) (store.Login, error) {
	var l store.Login
	err := s.write(ctx, func(w *Tx) error {
		var err error
		if l, err = scanDoc[store.Login](w.queryRow("SELECT doc FROM user_logins WHERE id = ?", id), "login", id); err != nil {
			return err
		}
		if l.Serial != oldSerial {
			return fmt.Errorf("login %s was renewed since this certificate was issued: %w", id, store.ErrFailedPrecondition)
		}
		if !now.Before(l.ExpiresAt) {
			return fmt.Errorf("login %s expired at %s: %w", id, l.ExpiresAt.Format(time.RFC3339), store.ErrFailedPrecondition)
		}
		l.Serial, l.RenewedAt = newSerial, CanonTime(now)
		doc, err := encodeJSON(l)
		if err != nil {
			return err
		}
		_, err = w.exec("UPDATE user_logins SET doc = ? WHERE id = ?", doc, id)
		return err
	})
	return l, err
}

// CreateAccessRequest stores a pending request with a request.create audit row.
func (s *Store) CreateAccessRequest(ctx context.Context, actor string, r store.AccessRequest) (store.AccessRequest, error) {
	if r.ID == "" {
		id, err := newID("r-")
		if err != nil {
			return store.AccessRequest{}, err
		}
		r.ID = id
	}
	err := s.write(ctx, func(w *Tx) error {
		r.State, r.CreatedAt = store.RequestPending, w.now
		if err := w.putRequest(r, true); err != nil {
			return err
		}
		return w.audit(actor, "request.create", r.ID, r)
	})
	if err != nil {
		return store.AccessRequest{}, err
	}
	return r, nil
}

func (w *Tx) putRequest(r store.AccessRequest, insert bool) error {
	doc, err := encodeJSON(r)
	if err != nil {
		return err
	}
	if insert {
		_, err = w.exec("INSERT INTO access_requests (id, created_at, doc) VALUES (?, ?, ?)", r.ID, timeValue(r.CreatedAt), doc)
	} else {
		_, err = w.exec("UPDATE access_requests SET doc = ? WHERE id = ?", doc, r.ID)
	}
	if err != nil {
		return fmt.Errorf("store access request %s: %w", r.ID, err)
	}
	return w.change(store.KindRequest, r.ID, false)
}

func scanRequest(row scanner, id string) (store.AccessRequest, error) {
	return scanDoc[store.AccessRequest](row, "access request", id)
}

// GetAccessRequest returns one request; store.ErrNotFound if absent.
func (s *Store) GetAccessRequest(ctx context.Context, id string) (store.AccessRequest, error) {
	return scanRequest(s.reader.QueryRowContext(ctx, "SELECT doc FROM access_requests WHERE id = ?", id), id)
}

// ListAccessRequests returns every request, newest first.
func (s *Store) ListAccessRequests(ctx context.Context) ([]store.AccessRequest, error) {
	out, err := queryAll(ctx, s.reader, func(r scanner) (store.AccessRequest, error) { return scanRequest(r, "") }, "SELECT doc FROM access_requests ORDER BY created_at DESC, id DESC")
	if err != nil {
		return nil, fmt.Errorf("list access requests: %w", err)
	}
	return out, nil
}

// DecideAccessRequest approves (creating g) or denies a pending request, with its audit row.
func (s *Store) DecideAccessRequest(ctx context.Context, actor, id, reason string, g *grant.Grant) (store.AccessRequest, error) {
	var r store.AccessRequest
	err := s.write(ctx, func(w *Tx) error {
		var err error
		if r, err = scanRequest(w.queryRow("SELECT doc FROM access_requests WHERE id = ?", id), id); err != nil {
			return err
		}
		if r.State != store.RequestPending {
			return fmt.Errorf("access request %s is already %s: %w", id, r.State, store.ErrFailedPrecondition)
		}
		r.DecidedBy, r.Decision, r.DecidedAt = actor, reason, w.now
		action := "request.deny"
		r.State = store.RequestDenied
		if g != nil {
			action, r.State = "request.approve", store.RequestApproved
			if g.ID == "" {
				if g.ID, err = newID("g-"); err != nil {
					return err
				}
			}
			g.CreatedAt = w.now
			if err := w.putGrant(*g); err != nil {
				return err
			}
			r.Grant = g.ID
		}
		if err := w.putRequest(r, false); err != nil {
			return err
		}
		return w.audit(actor, action, r.ID, r)
	})
	return r, err
}
