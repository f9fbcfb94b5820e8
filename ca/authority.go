package ca

import (
	"context"
	"crypto"
	"time"
)

// AuthorityKind says what an authority signs.
type AuthorityKind string

// Authority kinds.
const (
	KindX509Root         AuthorityKind = "x509-root"
	KindX509Intermediate AuthorityKind = "x509-intermediate"
	KindJWT              AuthorityKind = "jwt"
)

// AuthorityState is where an authority is in its life.
type AuthorityState string

// Authority states. A prepared authority is published (roots and JWT keys appear in the bundle) but does not
// sign; the active one signs; a retired one no longer signs and leaves the bundle once nothing it signed can
// still be valid.
const (
	StatePrepared AuthorityState = "prepared"
	StateActive   AuthorityState = "active"
	StateRetired  AuthorityState = "retired"
)

// Authority is the persisted record of one CA key: a root, a signing intermediate or a JWT signing key.
// The private key itself is held by a KeyManager under KeyID. With an UpstreamAuthority the roots are the
// upstream's: the CA holds no key for them (KeyID is empty) and their ID is the hex of the first 20 bytes
// of the SHA-256 of the certificate.
type Authority struct {
	ID    string // unique; for X.509 the hex subject key ID, for JWT the kid
	Kind  AuthorityKind
	State AuthorityState
	KeyID string // key manager identifier of the private key; empty for an upstream's root
	// CertDER is, for X.509 authorities, the certificate (root self-signed; intermediate signed by ParentID).
	// An intermediate minted by an upstream authority is followed by the upstream's own intermediates,
	// concatenated DER as x509.ParseCertificates reads it, so that the chain survives a restart.
	CertDER   []byte
	PublicKey []byte // JWT authorities: PKIX DER of the public key
	ParentID  string // intermediates: ID of the root that signed them (or that the upstream's chain ends at)
	// Owner is, for the intermediates of CAs that share one store (Config.Shared), the name of the server
	// that signs with it; empty for every other authority and for a CA alone.
	Owner       string
	NotBefore   time.Time
	NotAfter    time.Time
	CreatedAt   time.Time
	ActivatedAt time.Time // zero until active
	RetiredAt   time.Time // zero until retired
}

// KeyManager creates and holds CA private keys. Implementations: keymanager/disk (PEM files, 0600) and
// keymanager/memory, chosen by name through package keymanager.
type KeyManager interface {
	// GenerateKey creates and stores a new P-256 key under id, replacing nothing: an existing id is an error.
	GenerateKey(ctx context.Context, id string) (crypto.Signer, error)
	// GetKey returns the key stored under id; a missing key's error wraps fs.ErrNotExist.
	GetKey(ctx context.Context, id string) (crypto.Signer, error)
	// DeleteKey removes the key stored under id; a missing key is not an error.
	DeleteKey(ctx context.Context, id string) error
}

// AuthorityStore persists authority records. The server's store implements it; each call is one
// transaction with an audit row attributed to actor.
type AuthorityStore interface {
	ListAuthorities(ctx context.Context) ([]Authority, error)
	// PutAuthorities inserts or replaces (by ID) the given authorities atomically.
	PutAuthorities(ctx context.Context, actor, action string, auths []Authority) error
}
