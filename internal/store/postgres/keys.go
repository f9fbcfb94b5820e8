package postgres

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/kithid/kith/ca"
)

var _ ca.KeyManager = (*Keys)(nil)

// Keys is the key manager of several servers on one database: the CA's private keys (roots, intermediates,
// JWT keys and the audit checkpoint key) are kept in table kith_ca_keys, each sealed with AES-256-GCM under
// a key-encryption key (KEK) that every server has from a file (a Kubernetes Secret, a KMS-decrypted file)
// and the database never sees. The key's ID is the sealed data's associated data, so a sealed key cannot be
// passed off under another ID. Whoever has the database alone has no key; whoever has the KEK alone has no
// key either.
type Keys struct {
	db   *sql.DB
	aead cipher.AEAD
}

// MinKEKBytes is the least a KEK file must hold.
const MinKEKBytes = 32

// ReadKEK reads a key-encryption key file: at least 32 bytes of secret (raw, or text such as the base64 of
// 32 random bytes: `head -c 32 /dev/urandom | base64`); the AES-256 key is the SHA-256 of its trimmed
// content. The file must not be readable by others.
func ReadKEK(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("no key-encryption key file: set ca.kek_file (KITH_CA_KEK_FILE) to a file holding 32 random bytes (head -c 32 /dev/urandom | base64 > kek), the same on every server")
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("key-encryption key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("key-encryption key %s is mode %#o, open to other users: chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key-encryption key: %w", err)
	}
	b = []byte(strings.TrimSpace(string(b)))
	if len(b) < MinKEKBytes {
		return nil, fmt.Errorf("key-encryption key %s holds %d bytes, want at least %d random bytes (head -c 32 /dev/urandom | base64 > %s)", path, len(b), MinKEKBytes, path)
	}
	sum := sha256.Sum256(append([]byte("kith ca kek v1\x00"), b...))
	return sum[:], nil
}

// OpenKeys connects to the database at url (its own small pool) and returns the key manager sealing keys
// under kek (32 bytes, from ReadKEK).
func OpenKeys(ctx context.Context, url string, kek []byte) (*Keys, error) {
	if len(kek) != 32 {
		return nil, fmt.Errorf("database key manager: the key-encryption key is %d bytes, want 32", len(kek))
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database key manager: the URL does not parse: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(2)
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS kith_ca_keys (
		id     TEXT COLLATE "C" PRIMARY KEY,
		sealed BYTEA NOT NULL
	)`); err != nil {
		db.Close()
		return nil, fmt.Errorf("database key manager %s: %w", Redact(url), err)
	}
	return &Keys{db: db, aead: aead}, nil
}

// Close closes the key manager's connections.
func (k *Keys) Close() error { return k.db.Close() }

func (k *Keys) seal(id string, der []byte) []byte {
	nonce := make([]byte, k.aead.NonceSize())
	rand.Read(nonce)
	return k.aead.Seal(nonce, nonce, der, []byte(id))
}

func (k *Keys) open(id string, sealed []byte) ([]byte, error) {
	n := k.aead.NonceSize()
	if len(sealed) < n {
		return nil, fmt.Errorf("key %q: sealed key is truncated", id)
	}
	der, err := k.aead.Open(nil, sealed[:n], sealed[n:], []byte(id))
	if err != nil {
		return nil, fmt.Errorf("key %q does not open with this server's key-encryption key: every server needs the same ca.kek_file", id)
	}
	return der, nil
}

// GenerateKey creates a P-256 key, seals it and stores it under id; an existing id is an error.
func (k *Keys) GenerateKey(ctx context.Context, id string) (crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	res, err := k.db.ExecContext(ctx, "INSERT INTO kith_ca_keys (id, sealed) VALUES ($1, $2) ON CONFLICT DO NOTHING", id, k.seal(id, der))
	if err != nil {
		return nil, fmt.Errorf("store key %q: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return nil, fmt.Errorf("store key %q: %w", id, err)
	} else if n == 0 {
		return nil, fmt.Errorf("generate key %q: a key with this id exists", id)
	}
	return key, nil
}

// GetKey returns the key stored under id; a missing key's error wraps fs.ErrNotExist.
func (k *Keys) GetKey(ctx context.Context, id string) (crypto.Signer, error) {
	var sealed []byte
	switch err := k.db.QueryRowContext(ctx, "SELECT sealed FROM kith_ca_keys WHERE id = $1", id).Scan(&sealed); {
	case errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("key %q: %w", id, fs.ErrNotExist)
	case err != nil:
		return nil, fmt.Errorf("read key %q: %w", id, err)
	}
	der, err := k.open(id, sealed)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("parse key %q: %w", id, err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key %q is not a signing key", id)
	}
	return s, nil
}

// DeleteKey removes the key stored under id; a missing key is not an error.
func (k *Keys) DeleteKey(ctx context.Context, id string) error {
	if _, err := k.db.ExecContext(ctx, "DELETE FROM kith_ca_keys WHERE id = $1", id); err != nil {
		return fmt.Errorf("delete key %q: %w", id, err)
	}
	return nil
}
