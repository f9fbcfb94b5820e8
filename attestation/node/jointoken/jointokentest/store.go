// Package jointokentest provides an in-memory [jointoken.Store] for tests, with error injection.
package jointokentest

import (
	"context"
	"crypto/sha256"
	"sync"
	"time"

	"github.com/kithid/kith/attestation/node"
	"github.com/kithid/kith/attestation/node/jointoken"
)

// Store is an in-memory jointoken.Store. Its zero value is empty and ready; it is safe for concurrent use.
type Store struct {
	mu     sync.Mutex
	tokens map[string]jointoken.Token // by string(hash)
	agents []node.Agent

	// LookupErr, if set, is returned by every LookupJoinToken; UseErr by every UseJoinToken.
	LookupErr, UseErr error
}

var _ jointoken.Store = (*Store)(nil)

// Add stores t under the SHA-256 of secret.
func (s *Store) Add(secret string, t jointoken.Token) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tokens == nil {
		s.tokens = map[string]jointoken.Token{}
	}
	s.tokens[hash(secret)] = t
}

// Token returns the token stored under secret.
func (s *Store) Token(secret string) (jointoken.Token, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tokens[hash(secret)]
	return t, ok
}

// Agents returns the agents recorded by UseJoinToken, in order.
func (s *Store) Agents() []node.Agent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]node.Agent(nil), s.agents...)
}

// LookupJoinToken returns the token or jointoken.ErrInvalid.
func (s *Store) LookupJoinToken(_ context.Context, h []byte) (jointoken.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.LookupErr != nil {
		return jointoken.Token{}, s.LookupErr
	}
	t, ok := s.tokens[string(h)]
	if !ok {
		return jointoken.Token{}, jointoken.ErrInvalid
	}
	return t, nil
}

// UseJoinToken marks the token used at now and records the agent, or returns jointoken.ErrInvalid for a
// token that is unknown, used or expired at now.
func (s *Store) UseJoinToken(_ context.Context, h []byte, now time.Time, a node.Agent) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.UseErr != nil {
		return s.UseErr
	}
	t, ok := s.tokens[string(h)]
	if !ok || !t.UsedAt.IsZero() || (!t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt)) {
		return jointoken.ErrInvalid
	}
	t.UsedAt = now
	s.tokens[string(h)] = t
	s.agents = append(s.agents, a)
	return nil
}

func hash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return string(h[:])
}
