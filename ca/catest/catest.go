// Package catest has fakes for testing code that uses package ca: an in-memory AuthorityStore with error
// injection and a record of its calls, and helpers that make a CA and have it issue SVIDs.
package catest

import (
	"context"
	"slices"
	"sync"

	"github.com/kithid/kith/ca"
)

var _ ca.AuthorityStore = (*Store)(nil)

// Call is one PutAuthorities call as the Store saw it.
type Call struct {
	Actor, Action string
	Authorities   []ca.Authority
}

// Store is an in-memory ca.AuthorityStore. SetListErr and SetPutErr make calls fail. It is safe for
// concurrent use.
type Store struct {
	mu      sync.Mutex
	auths   []ca.Authority // insertion order
	calls   []Call
	listErr error
	putErr  error
}

// NewStore returns an empty Store.
func NewStore() *Store { return &Store{} }

// SetPutErr makes PutAuthorities fail with err (nil: succeed).
func (s *Store) SetPutErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.putErr = err
}

// SetListErr makes ListAuthorities fail with err (nil: succeed).
func (s *Store) SetListErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listErr = err
}

// ListAuthorities returns copies of the stored authorities.
func (s *Store) ListAuthorities(context.Context) ([]ca.Authority, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listErr != nil {
		return nil, s.listErr
	}
	out := make([]ca.Authority, len(s.auths))
	for i, a := range s.auths {
		out[i] = clone(a)
	}
	return out, nil
}

// PutAuthorities inserts or replaces (by ID) the given authorities and records the call.
func (s *Store) PutAuthorities(_ context.Context, actor, action string, auths []ca.Authority) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.putErr != nil {
		return s.putErr
	}
	call := Call{Actor: actor, Action: action}
	for _, a := range auths {
		a = clone(a)
		call.Authorities = append(call.Authorities, a)
		if i := slices.IndexFunc(s.auths, func(b ca.Authority) bool { return b.ID == a.ID }); i >= 0 {
			s.auths[i] = a
		} else {
			s.auths = append(s.auths, a)
		}
	}
	s.calls = append(s.calls, call)
	return nil
}

// Calls returns the successful PutAuthorities calls so far.
func (s *Store) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// Actions returns the action of every successful PutAuthorities call so far, in order.
func (s *Store) Actions() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, c := range s.calls {
		out = append(out, c.Action)
	}
	return out
}

func clone(a ca.Authority) ca.Authority {
	a.CertDER = slices.Clone(a.CertDER)
	a.PublicKey = slices.Clone(a.PublicKey)
	return a
}
