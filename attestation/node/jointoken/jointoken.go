// Package jointoken is node attestation by one-time join token: an operator makes a token with
// `kith token create`, and the agent started with it sends the token's secret. The server finds the
// token by the secret's SHA-256, refuses it when unknown, used or expired, and redeems it only once the
// agent's SVID is signed, in the same store transaction that records the agent.
//
// The agent joins as spiffe://<trust domain>/kith/agent/join_token/<token name, or token ID> with the
// node selectors join_token:id:<token ID> and, for a named token, join_token:name:<name>.
package jointoken

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/node"
)

// Type is the attestation type of a join token.
const Type = attestation.TypeJoinToken

// ErrInvalid is what a [Store] returns for a token that is unknown, or, when redeeming, already used or
// expired.
var ErrInvalid = errors.New("join token is unknown, used or expired")

// Token is a join token as the attestor sees it.
type Token struct {
	ID        string
	Name      string    // optional; the agent ID uses it instead of ID
	ExpiresAt time.Time // zero: never
	UsedAt    time.Time // zero: not used
}

// Store finds and redeems join tokens by the SHA-256 of their secret.
type Store interface {
	// LookupJoinToken returns the token whose secret hashes to hash, or an error wrapping [ErrInvalid].
	LookupJoinToken(ctx context.Context, hash []byte) (Token, error)
	// UseJoinToken atomically redeems the token (unused and unexpired at now) and records the agent, or
	// returns an error wrapping [ErrInvalid].
	UseJoinToken(ctx context.Context, hash []byte, now time.Time, agent node.Agent) error
}

// Config builds an [Attestor].
type Config struct {
	TrustDomain spiffeid.TrustDomain // required
	Tokens      Store                // required
	// Now is the clock for token expiry; zero: time.Now.
	Now func() time.Time
}

// Attestor is the server half of join-token attestation.
type Attestor struct{ cfg Config }

var _ node.Attestor = (*Attestor)(nil)

// New validates cfg and returns the attestor.
func New(cfg Config) (*Attestor, error) {
	if cfg.TrustDomain.IsZero() || cfg.Tokens == nil {
		return nil, errors.New("jointoken: trust domain and token store are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Attestor{cfg: cfg}, nil
}

// PayloadName says what the payload is: the token's secret.
func (*Attestor) PayloadName() string { return "the join token secret" }

// Attest finds the token whose secret is payload. An unknown, used or expired token is refused (reason
// "unknown", "already used", "expired", with the token's ID). The result's Commit redeems the token and
// records the agent in one store transaction, and refuses ("used or expired concurrently") a token that
// another attestation redeemed, or that expired, in between. It needs no challenge.
func (a *Attestor) Attest(ctx context.Context, payload []byte, _ node.Challenge) (node.Result, error) {
	sum := sha256.Sum256(payload)
	hash := sum[:]
	now := a.cfg.Now()
	tok, err := a.cfg.Tokens.LookupJoinToken(ctx, hash)
	switch {
	case errors.Is(err, ErrInvalid):
		return node.Result{}, node.Refuse("unknown", tokenAttr(""))
	case err != nil:
		return node.Result{}, err // the store says what failed
	case !tok.UsedAt.IsZero():
		return node.Result{}, node.Refuse("already used", tokenAttr(tok.ID))
	case !tok.ExpiresAt.IsZero() && !now.Before(tok.ExpiresAt):
		return node.Result{}, node.Refuse("expired", tokenAttr(tok.ID))
	}
	sels := []attestation.Selector{{Type: attestation.TypeJoinToken, Key: "id", Value: tok.ID}}
	if tok.Name != "" {
		sels = append(sels, attestation.Selector{Type: attestation.TypeJoinToken, Key: "name", Value: tok.Name})
	}
	return node.Result{
		AgentID:   AgentID(a.cfg.TrustDomain, tok.Name, tok.ID),
		Selectors: attestation.Normalize(sels),
		Attrs:     []node.Attr{tokenAttr(tok.ID)},
		Commit: func(ctx context.Context, agent node.Agent) error {
			if err := a.cfg.Tokens.UseJoinToken(ctx, hash, now, agent); err != nil {
				if errors.Is(err, ErrInvalid) {
					return node.Refuse("used or expired concurrently", tokenAttr(tok.ID))
				}
				return err
			}
			return nil
		},
	}, nil
}

func tokenAttr(id string) node.Attr { return node.Attr{Key: "token_id", Value: id} }

// AgentID is the SPIFFE ID of the agent that joins with the token named name (or, unnamed, with ID id).
// Names and IDs are valid path segments: they are checked before a token is stored.
func AgentID(td spiffeid.TrustDomain, name, id string) spiffeid.ID {
	if name == "" {
		name = id
	}
	aid, err := node.AgentID(td, Type, name)
	if err != nil {
		panic(fmt.Sprintf("join token agent id: %v", err))
	}
	return aid
}

// Evidence is the agent half of join-token attestation: the token's secret.
type Evidence string

var _ node.Evidence = Evidence("")

// Type is [Type].
func (Evidence) Type() string { return Type }

// Payload is the secret.
func (e Evidence) Payload(context.Context) ([]byte, error) { return []byte(e), nil }
