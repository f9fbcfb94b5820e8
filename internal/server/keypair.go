package server

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// keyPair is a PEM certificate and key on disk, loaded again when either file changes (a renewed
// certificate needs no restart).
type keyPair struct {
	cert, key string

	mu      sync.Mutex
	loaded  *tls.Certificate
	modTime time.Time
}

func (k *keyPair) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var newest time.Time
	for _, p := range []string{k.cert, k.key} {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("certificate: %w", err)
		}
		if fi.ModTime().After(newest) {
			newest = fi.ModTime()
		}
	}
	if k.loaded != nil && !newest.After(k.modTime) {
		return k.loaded, nil
	}
	c, err := tls.LoadX509KeyPair(k.cert, k.key)
	if err != nil {
		return nil, fmt.Errorf("load %s and %s: %w", k.cert, k.key, err)
	}
	k.loaded, k.modTime = &c, newest
	return k.loaded, nil
}
