// Package keymanager chooses a ca.KeyManager by name. Each key manager package registers itself from its
// init function (as smallstep's CA services and caddy's modules do), so adding one (a PKCS#11 or a cloud
// KMS key manager) is a new package under ca/keymanager and a blank import where the server is wired; no
// caller changes.
//
// The built-in key managers are "disk" (package disk) and "memory" (package memory).
package keymanager

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/kithid/kith/ca"
)

// Options is what a key manager may need to start. A key manager ignores the fields it does not use.
type Options struct {
	// Dir is the directory a key manager that keeps files keeps them in (disk requires it). Zero: none.
	Dir string
}

// NewFunc makes a key manager from opts.
type NewFunc func(opts Options) (ca.KeyManager, error)

var (
	mu       sync.RWMutex
	registry = map[string]NewFunc{}
)

// Register makes fn available under name. It panics if name is empty, fn is nil or name is taken:
// registration happens in init functions, where a mistake is a programming error.
func Register(name string, fn NewFunc) {
	mu.Lock()
	defer mu.Unlock()
	switch {
	case name == "":
		panic("keymanager: Register with an empty name")
	case fn == nil:
		panic("keymanager: Register " + name + " with a nil func")
	}
	if _, ok := registry[name]; ok {
		panic("keymanager: " + name + " is registered twice")
	}
	registry[name] = fn
}

// Names returns the registered names, sorted.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// New makes the key manager registered under name. An unknown name is an error that lists the known ones;
// the key manager's own errors are returned as they are.
func New(name string, opts Options) (ca.KeyManager, error) {
	mu.RLock()
	fn, ok := registry[name]
	mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("unknown key manager %q: use one of %s", name, strings.Join(Names(), ", "))
	}
	return fn(opts) // its errors name the key manager already ("disk key manager: ...")
}
