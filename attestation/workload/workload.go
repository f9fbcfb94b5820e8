// Package workload defines workload attestation: how the node agent learns what a process that connects
// to its socket is, as selectors (unix:uid:1000, k8s:sa:payments) matched against registration entries.
//
// Each method is an [Attestor] in a sibling package (attestation/workload/unix is the first) that
// registers a [Factory] under its name with [Register]. The agent builds the attestors its configuration
// lists with [New], which runs them all for each caller and merges their selectors.
package workload

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/peer"
)

// Attestor derives a workload's selectors from the peer credentials of its connection. It must be safe
// for concurrent use. An error means the workload cannot be attested now (for instance it exited, or
// its pid was reused: an error wrapping [peer.ErrProcessChanged]) and it gets no identity.
type Attestor interface {
	Attest(ctx context.Context, creds peer.Credentials) ([]attestation.Selector, error)
}

// Options are what the agent gives every attestor it builds.
type Options struct {
	Logger *slog.Logger // never nil
	// Config is the attestor's own configuration, from Configs by its name: a value of the type its
	// package documents (for "k8s", k8s.Config), or nil for the defaults.
	Config any
	// Configs holds each attestor's configuration by name, for [New]; a factory reads Config.
	Configs map[string]any
}

// Factory builds an attestor.
type Factory func(Options) (Attestor, error)

var registry = struct {
	sync.RWMutex
	m map[string]Factory
}{m: map[string]Factory{}}

// Register makes a method available under name (e.g. "unix"), normally from its package's init. It
// panics when name is empty or already registered.
func Register(name string, f Factory) {
	registry.Lock()
	defer registry.Unlock()
	if name == "" || f == nil {
		panic("workload: register an attestor with a name and a factory")
	}
	if _, dup := registry.m[name]; dup {
		panic(fmt.Sprintf("workload: attestor %q registered twice", name))
	}
	registry.m[name] = f
}

// Names lists the registered methods, sorted.
func Names() []string {
	registry.RLock()
	defer registry.RUnlock()
	return names()
}

// names lists the registered methods; the caller holds the registry's lock.
func names() []string {
	out := make([]string, 0, len(registry.m))
	for n := range registry.m {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// UnknownError is [New]'s error for a name no method registered.
type UnknownError struct {
	Name  string
	Known []string
}

func (e *UnknownError) Error() string {
	return fmt.Sprintf("unknown workload attestor %q (known: %s)", e.Name, strings.Join(e.Known, ", "))
}

// Check reports, as an [UnknownError], the first of names that no method registered.
func Check(list []string) error {
	registry.RLock()
	defer registry.RUnlock()
	for _, n := range list {
		if _, ok := registry.m[n]; !ok {
			return &UnknownError{Name: n, Known: names()}
		}
	}
	return nil
}

// New builds the attestors named, in order, and returns them merged as with [Merge]. Names must be
// registered and not repeated; at least one is required.
func New(names []string, opts Options) (Attestor, error) {
	if len(names) == 0 {
		return nil, fmt.Errorf("workload attestors: none configured (known: %s)", strings.Join(Names(), ", "))
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	as := make([]Attestor, 0, len(names))
	for i, n := range names {
		if slices.Contains(names[:i], n) {
			return nil, fmt.Errorf("workload attestor %q is listed twice", n)
		}
		registry.RLock()
		f, ok := registry.m[n]
		registry.RUnlock()
		if !ok {
			return nil, &UnknownError{Name: n, Known: Names()}
		}
		o := opts
		o.Config = opts.Configs[n]
		a, err := f(o)
		if err != nil {
			return nil, fmt.Errorf("workload attestor %s: %w", n, err)
		}
		as = append(as, a)
	}
	return Merge(as...), nil
}

// Merge returns an attestor that runs each of as, in order, and returns their selectors together,
// normalized (sorted, without duplicates). The first error ends attestation and is returned as is: a
// workload one attestor cannot attest gets no identity. Merge of one attestor is that attestor.
func Merge(as ...Attestor) Attestor {
	if len(as) == 1 {
		return as[0]
	}
	return merged(slices.Clone(as))
}

type merged []Attestor

func (m merged) Attest(ctx context.Context, creds peer.Credentials) ([]attestation.Selector, error) {
	var sels []attestation.Selector
	for _, a := range m {
		s, err := a.Attest(ctx, creds)
		if err != nil {
			return nil, err
		}
		sels = append(sels, s...)
	}
	return attestation.Normalize(sels), nil
}
