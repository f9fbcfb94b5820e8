// Package disk is a ca.KeyManager that keeps each CA key in its own PKCS#8 PEM file, <dir>/<id>.pem, mode
// 0600, in a directory of mode 0700. Files are written atomically and never overwritten; keys are read
// lazily and cached.
package disk

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/keymanager"
)

var _ ca.KeyManager = (*Manager)(nil)

// Name is the key manager's name in the keymanager registry and in the server's ca.key_manager setting.
const Name = "disk"

func init() {
	keymanager.Register(Name, func(opts keymanager.Options) (ca.KeyManager, error) { return New(opts.Dir) })
}

const pemType = "PRIVATE KEY"

// Manager stores keys as PEM files in one directory. It is safe for concurrent use.
type Manager struct {
	dir string

	mu    sync.Mutex // serializes writes and guards cache
	cache map[string]crypto.Signer
}

// New returns a Manager for dir, creating it with mode 0700 if it does not exist.
func New(dir string) (*Manager, error) {
	if dir == "" {
		return nil, errors.New("disk key manager: directory is required")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("disk key manager: create %s: %w", dir, err)
	}
	return &Manager{dir: dir, cache: make(map[string]crypto.Signer)}, nil
}

// checkID rejects key IDs that are not a plain file name.
func checkID(id string) error {
	switch {
	case id == "":
		return errors.New("key id is empty")
	case id == "." || strings.Contains(id, ".."):
		return fmt.Errorf("key id %q contains \"..\"", id)
	case strings.ContainsAny(id, `/\`+"\x00") || strings.HasPrefix(id, "."):
		return fmt.Errorf("key id %q must not contain path separators or start with a dot", id)
	case len(id) > 200:
		return fmt.Errorf("key id %q is too long", id)
	}
	return nil
}

func (m *Manager) path(id string) string { return filepath.Join(m.dir, id+".pem") }

// GenerateKey creates a P-256 key, writes it to <dir>/<id>.pem (mode 0600) and returns it. An existing key
// file for id is an error.
func (m *Manager) GenerateKey(_ context.Context, id string) (crypto.Signer, error) {
	if err := checkID(id); err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key %q: %w", id, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("generate key %q: marshal: %w", id, err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der})

	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.cache[id]; ok {
		return nil, fmt.Errorf("generate key %q: key already exists", id)
	}
	if err := m.writeNew(m.path(id), data); err != nil {
		return nil, fmt.Errorf("generate key %q: %w", id, err)
	}
	m.cache[id] = key
	return key, nil
}

// writeNew writes data to a temporary file, syncs it and links it to path, which must not exist yet.
func (m *Manager) writeNew(path string, data []byte) (err error) {
	tmp, err := os.CreateTemp(m.dir, ".tmp-key-*")
	if err != nil {
		return fmt.Errorf("create temporary file: %w", err)
	}
	defer func() {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("chmod temporary file: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write temporary file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync temporary file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close temporary file: %w", err)
	}
	// A hard link, unlike a rename, fails if the key file already exists.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return errors.New("key already exists")
		}
		return fmt.Errorf("link key file: %w", err)
	}
	if d, err := os.Open(m.dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// GetKey returns the key stored under id, reading its file on first use. A missing key's error wraps
// fs.ErrNotExist.
func (m *Manager) GetKey(_ context.Context, id string) (crypto.Signer, error) {
	if err := checkID(id); err != nil {
		return nil, fmt.Errorf("get key: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if key, ok := m.cache[id]; ok {
		return key, nil
	}
	data, err := os.ReadFile(m.path(id))
	if err != nil {
		return nil, fmt.Errorf("get key %q: %w", id, err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != pemType {
		return nil, fmt.Errorf("get key %q: %s holds no %q PEM block", id, m.path(id), pemType)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("get key %q: parse pkcs#8: %w", id, err)
	}
	key, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("get key %q: %T is not a signer", id, parsed)
	}
	m.cache[id] = key
	return key, nil
}

// DeleteKey removes the key file for id; a missing key is not an error.
func (m *Manager) DeleteKey(_ context.Context, id string) error {
	if err := checkID(id); err != nil {
		return fmt.Errorf("delete key: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.cache, id)
	if err := os.Remove(m.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete key %q: %w", id, err)
	}
	return nil
}
