package attestors

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/node"
	"github.com/kithid/kith/attestation/node/jointoken"
	"github.com/kithid/kith/internal/store"
)

// tokens is a TokenStore that returns the configured token and errors and records the agent it is given.
type tokens struct {
	tok               store.JoinToken
	lookupErr, useErr error
	agent             store.Agent
}

func (f *tokens) LookupJoinToken(context.Context, []byte) (store.JoinToken, error) {
	return f.tok, f.lookupErr
}

func (f *tokens) UseJoinToken(_ context.Context, _ []byte, _ time.Time, a store.Agent) (store.JoinToken, store.Agent, error) {
	f.agent = a
	return f.tok, a, f.useErr
}

func TestJoinTokensMapTheStore(t *testing.T) {
	ctx := context.Background()
	id := spiffeid.RequireFromString("spiffe://example.org/kith/agent/join_token/n1")

	t.Run("a token is read and an agent recorded field for field", func(t *testing.T) {
		exp := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		f := &tokens{tok: store.JoinToken{ID: "a1", Name: "n1", ExpiresAt: exp, Hash: []byte{1}}}
		j := JoinTokens{Store: f}
		tok, err := j.LookupJoinToken(ctx, []byte{1})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(jointoken.Token{ID: "a1", Name: "n1", ExpiresAt: exp}, tok); diff != "" {
			t.Errorf("token (-want +got):\n%s", diff)
		}
		sels := []attestation.Selector{{Type: "join_token", Key: "id", Value: "a1"}}
		if err := j.UseJoinToken(ctx, []byte{1}, exp, node.Agent{ID: id, AttestationType: "join_token", Selectors: sels, SerialNumber: "0a", ExpiresAt: exp}); err != nil {
			t.Fatal(err)
		}
		want := store.Agent{ID: id, AttestationType: "join_token", Selectors: sels, SerialNumber: "0a", ExpiresAt: exp}
		if diff := cmp.Diff(want, f.agent, cmp.Comparer(func(a, b spiffeid.ID) bool { return a == b })); diff != "" {
			t.Errorf("recorded agent (-want +got):\n%s", diff)
		}
	})

	tests := []struct {
		name    string
		err     error
		invalid bool
	}{
		{name: "an invalid token is jointoken's invalid token and still the store's", err: store.ErrTokenInvalid, invalid: true},
		{name: "a live agent under the id stays AlreadyExists", err: fmt.Errorf("evict it first: %w", store.ErrAlreadyExists)},
		{name: "another failure passes through", err: errors.New("disk I/O error")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := JoinTokens{Store: &tokens{lookupErr: tt.err, useErr: tt.err}}
			_, lerr := j.LookupJoinToken(ctx, nil)
			uerr := j.UseJoinToken(ctx, nil, time.Time{}, node.Agent{ID: id})
			for _, err := range []error{lerr, uerr} {
				if !errors.Is(err, tt.err) || errors.Is(err, jointoken.ErrInvalid) != tt.invalid {
					t.Errorf("error %v: is store's %v, is jointoken.ErrInvalid %v (want %v)", err, errors.Is(err, tt.err), errors.Is(err, jointoken.ErrInvalid), tt.invalid)
				}
			}
		})
	}
}

func TestNodeServesJoinTokens(t *testing.T) {
	as, err := Node(spiffeid.RequireTrustDomainFromString("example.org"), &tokens{}, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := as[jointoken.Type]; !ok || len(as) != 1 {
		t.Errorf("attestors %v, want join_token only", as)
	}
}
