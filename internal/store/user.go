package store

import (
	"errors"
	"time"
)

// ErrCodeInvalid covers an enrolment code that is unknown, already used or expired; the caller must not
// learn which.
var ErrCodeInvalid = errors.New("enrolment code is unknown, already used or expired")

// User is a person with an identity of their own, spiffe://TD/user/<Name>.
type User struct {
	Name   string            // [a-z0-9][a-z0-9._-]*, at most 64 bytes
	Labels map[string]string // e.g. team=payments; pushed to agents as the identity's labels
	Roles  []string          // e.g. admin; decided on by the kith.admin policy
	// Disabled users cannot log in, renew, or call the admin API, and agents deny their calls.
	Disabled  bool
	Source    string // "cli" (kith user add) or "oidc" (first seen at an OpenID Connect login)
	CreatedAt time.Time
	UpdatedAt time.Time
	Revision  int64
}

// EnrolmentCode is a one-time secret with which a user logs in without an identity provider. Only the
// SHA-256 of the secret is stored.
type EnrolmentCode struct {
	ID        string // short public identifier, shown in the audit log
	User      string
	Hash      []byte
	CreatedAt time.Time
	ExpiresAt time.Time
	UsedAt    time.Time // zero while unused
}

// Login is one session of a user on one device: its X.509-SVID is renewed on use until ExpiresAt, each
// renewal replacing Serial (the serial of the certificate that may renew next).
type Login struct {
	ID        string
	User      string
	Method    string // "code" or "oidc"
	Serial    string // hex serial of the newest certificate issued to this login
	CreatedAt time.Time
	ExpiresAt time.Time
	RenewedAt time.Time
}

// Access request states.
const (
	RequestPending  = "pending"
	RequestApproved = "approved"
	RequestDenied   = "denied"
)

// AccessRequest is a user asking for a time-bound grant to call a target; approving it creates the grant.
type AccessRequest struct {
	ID        string
	Caller    string // the requesting user's SPIFFE ID
	Target    string // SPIFFE ID of the target
	Duration  time.Duration
	Reason    string
	State     string // RequestPending, RequestApproved or RequestDenied
	DecidedBy string
	// Decision is the approver's or denier's reason (or the auto-approving policy's).
	Decision  string
	Grant     string // ID of the grant an approval created
	CreatedAt time.Time
	DecidedAt time.Time
}
