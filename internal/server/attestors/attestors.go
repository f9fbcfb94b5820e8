// Package attestors builds the node attestors the server offers agents, by attestation type, over the
// server's store: the wiring between the attestation/node methods and internal/store.
package attestors

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/attestation/node"
	"github.com/kithid/kith/attestation/node/jointoken"
	"github.com/kithid/kith/internal/store"
)

// TokenStore is the part of the store join-token attestation uses.
type TokenStore interface {
	LookupJoinToken(ctx context.Context, hash []byte) (store.JoinToken, error)
	UseJoinToken(ctx context.Context, hash []byte, now time.Time, agent store.Agent) (store.JoinToken, store.Agent, error)
}

// Node returns the node attestation methods the agent API serves, by attestation type.
func Node(td spiffeid.TrustDomain, tokens TokenStore, now func() time.Time) (map[string]node.Attestor, error) {
	jt, err := jointoken.New(jointoken.Config{TrustDomain: td, Tokens: JoinTokens{tokens}, Now: now})
	if err != nil {
		return nil, fmt.Errorf("node attestors: %w", err)
	}
	return map[string]node.Attestor{jointoken.Type: jt}, nil
}

// JoinTokens adapts the store to jointoken.Store.
type JoinTokens struct{ Store TokenStore }

var _ jointoken.Store = JoinTokens{}

// LookupJoinToken finds the token by the hash of its secret.
func (j JoinTokens) LookupJoinToken(ctx context.Context, hash []byte) (jointoken.Token, error) {
	t, err := j.Store.LookupJoinToken(ctx, hash)
	if err != nil {
		return jointoken.Token{}, tokenErr(err)
	}
	return jointoken.Token{ID: t.ID, Name: t.Name, ExpiresAt: t.ExpiresAt, UsedAt: t.UsedAt}, nil
}

// UseJoinToken redeems the token and records the agent in one store transaction.
func (j JoinTokens) UseJoinToken(ctx context.Context, hash []byte, now time.Time, a node.Agent) error {
	_, _, err := j.Store.UseJoinToken(ctx, hash, now, store.Agent{
		ID: a.ID, AttestationType: a.AttestationType, Selectors: a.Selectors, SerialNumber: a.SerialNumber, ExpiresAt: a.ExpiresAt,
	})
	return tokenErr(err)
}

// tokenErr marks the store's invalid-token error as jointoken's, keeping the rest of the chain.
func tokenErr(err error) error {
	if errors.Is(err, store.ErrTokenInvalid) {
		return fmt.Errorf("%w: %w", jointoken.ErrInvalid, err)
	}
	return err
}
