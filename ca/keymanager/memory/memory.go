// Package memory is a ca.KeyManager that keeps CA keys in memory only. Keys are lost when the process
// exits, so it suits tests and `kith dev`, not a server whose store outlives it.
package memory

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"io/fs"
	"sync"

	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/keymanager"
)

var _ ca.KeyManager = (*Manager)(nil)

// Name is the key manager's name in the keymanager registry and in the server's ca.key_manager setting.
const Name = "memory"

func init() {
	keymanager.Register(Name, func(keymanager.Options) (ca.KeyManager, error) { return New(), nil })
}

// Manager holds P-256 keys in a map. It is safe for concurrent use.
type Manager struct {
	mu   sync.Mutex
	keys map[string]crypto.Signer
}

// New returns an empty Manager.
func New() *Manager {
	return &Manager{keys: make(map[string]crypto.Signer)}
}

// GenerateKey creates a P-256 key under id; an existing id is an error.
func (m *Manager) GenerateKey(_ context.Context, id string) (crypto.Signer, error) {
	if id == "" {
		return nil, fmt.Errorf("generate key: empty key id")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.keys[id]; ok {
		return nil, fmt.Errorf("generate key %q: key already exists", id)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key %q: %w", id, err)
	}
	m.keys[id] = key
	return key, nil
}

// GetKey returns the key stored under id. A missing key's error wraps fs.ErrNotExist, as the disk
// manager's does.
func (m *Manager) GetKey(_ context.Context, id string) (crypto.Signer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key, ok := m.keys[id]
	if !ok {
		return nil, fmt.Errorf("get key %q: key not found: %w", id, fs.ErrNotExist)
	}
	return key, nil
}

// DeleteKey removes the key stored under id; a missing key is not an error.
func (m *Manager) DeleteKey(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.keys, id)
	return nil
}
