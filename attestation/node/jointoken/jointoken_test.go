package jointoken_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/node"
	"github.com/kithid/kith/attestation/node/jointoken"
	"github.com/kithid/kith/attestation/node/jointoken/jointokentest"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

var now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newAttestor(t *testing.T, st jointoken.Store) *jointoken.Attestor {
	t.Helper()
	a, err := jointoken.New(jointoken.Config{TrustDomain: td, Tokens: st, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func noChallenge(context.Context, []byte) ([]byte, error) { return nil, node.ErrNoChallenge }

func TestAttest(t *testing.T) {
	st := &jointokentest.Store{}
	st.Add("named", jointoken.Token{ID: "a1", Name: "node1", ExpiresAt: now.Add(time.Hour)})
	st.Add("unnamed", jointoken.Token{ID: "b2"})
	st.Add("used", jointoken.Token{ID: "c3", UsedAt: now.Add(-time.Minute)})
	st.Add("expired", jointoken.Token{ID: "d4", ExpiresAt: now})
	a := newAttestor(t, st)

	tests := []struct {
		name, secret string
		wantID       string
		wantSels     []string
		wantRefusal  *node.Refusal
	}{
		{name: "a named token joins by its name with both selectors", secret: "named",
			wantID: "spiffe://example.org/kith/agent/join_token/node1", wantSels: []string{"join_token:id:a1", "join_token:name:node1"}},
		{name: "an unnamed token that never expires joins by its id", secret: "unnamed",
			wantID: "spiffe://example.org/kith/agent/join_token/b2", wantSels: []string{"join_token:id:b2"}},
		{name: "an unknown token is refused without a token id", secret: "never-issued",
			wantRefusal: &node.Refusal{Reason: "unknown", Attrs: []node.Attr{{Key: "token_id"}}}},
		{name: "a used token is refused", secret: "used",
			wantRefusal: &node.Refusal{Reason: "already used", Attrs: []node.Attr{{Key: "token_id", Value: "c3"}}}},
		{name: "a token at its expiry is refused", secret: "expired",
			wantRefusal: &node.Refusal{Reason: "expired", Attrs: []node.Attr{{Key: "token_id", Value: "d4"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := a.Attest(t.Context(), []byte(tt.secret), noChallenge)
			if tt.wantRefusal != nil {
				var r *node.Refusal
				if !errors.As(err, &r) {
					t.Fatalf("Attest() error = %v, want a refusal", err)
				}
				if diff := cmp.Diff(tt.wantRefusal, r); diff != "" {
					t.Errorf("refusal (-want +got):\n%s", diff)
				}
				return
			}
			if err != nil {
				t.Fatalf("Attest() error: %v", err)
			}
			if res.AgentID.String() != tt.wantID {
				t.Errorf("agent id = %s, want %s", res.AgentID, tt.wantID)
			}
			if diff := cmp.Diff(tt.wantSels, attestation.Strings(res.Selectors)); diff != "" {
				t.Errorf("selectors (-want +got):\n%s", diff)
			}
			if res.Commit == nil {
				t.Fatal("no commit: the token would never be redeemed")
			}
		})
	}
}

func TestCommit(t *testing.T) {
	agent := func(id spiffeid.ID) node.Agent {
		return node.Agent{ID: id, AttestationType: jointoken.Type, SerialNumber: "0a", ExpiresAt: now.Add(time.Hour)}
	}

	t.Run("the token is redeemed only by commit, which records the agent", func(t *testing.T) {
		st := &jointokentest.Store{}
		st.Add("s", jointoken.Token{ID: "a1", Name: "node1"})
		res, err := newAttestor(t, st).Attest(t.Context(), []byte("s"), noChallenge)
		if err != nil {
			t.Fatal(err)
		}
		if tok, _ := st.Token("s"); !tok.UsedAt.IsZero() {
			t.Fatal("the token was used before commit")
		}
		if err := res.Commit(t.Context(), agent(res.AgentID)); err != nil {
			t.Fatalf("Commit() error: %v", err)
		}
		if tok, _ := st.Token("s"); !tok.UsedAt.Equal(now) {
			t.Errorf("token used at %v, want %v", tok.UsedAt, now)
		}
		if diff := cmp.Diff([]node.Agent{agent(res.AgentID)}, st.Agents(), cmp.Comparer(func(a, b spiffeid.ID) bool { return a == b })); diff != "" {
			t.Errorf("recorded agents (-want +got):\n%s", diff)
		}
	})

	t.Run("of two attestations with one token, the second commit is refused", func(t *testing.T) {
		st := &jointokentest.Store{}
		st.Add("s", jointoken.Token{ID: "a1"})
		a := newAttestor(t, st)
		first, err1 := a.Attest(t.Context(), []byte("s"), noChallenge)
		second, err2 := a.Attest(t.Context(), []byte("s"), noChallenge)
		if err1 != nil || err2 != nil {
			t.Fatalf("Attest() errors: %v, %v", err1, err2)
		}
		if err := first.Commit(t.Context(), agent(first.AgentID)); err != nil {
			t.Fatalf("first Commit() error: %v", err)
		}
		err := second.Commit(t.Context(), agent(second.AgentID))
		var r *node.Refusal
		if !errors.As(err, &r) {
			t.Fatalf("second Commit() error = %v, want a refusal", err)
		}
		want := &node.Refusal{Reason: "used or expired concurrently", Attrs: []node.Attr{{Key: "token_id", Value: "a1"}}}
		if diff := cmp.Diff(want, r); diff != "" {
			t.Errorf("refusal (-want +got):\n%s", diff)
		}
		if n := len(st.Agents()); n != 1 {
			t.Errorf("%d agents recorded, want 1", n)
		}
	})

	t.Run("a store failure on commit is an error, not a refusal", func(t *testing.T) {
		boom := errors.New("disk full")
		st := &jointokentest.Store{UseErr: boom}
		st.Add("s", jointoken.Token{ID: "a1"})
		res, err := newAttestor(t, st).Attest(t.Context(), []byte("s"), noChallenge)
		if err != nil {
			t.Fatal(err)
		}
		err = res.Commit(t.Context(), agent(res.AgentID))
		var r *node.Refusal
		if !errors.Is(err, boom) || errors.As(err, &r) {
			t.Errorf("Commit() error = %v, want %v and no refusal", err, boom)
		}
	})
}

func TestAStoreFailureOnLookupIsAnErrorNotARefusal(t *testing.T) {
	boom := errors.New("database is locked")
	_, err := newAttestor(t, &jointokentest.Store{LookupErr: boom}).Attest(t.Context(), []byte("s"), noChallenge)
	var r *node.Refusal
	if !errors.Is(err, boom) || errors.As(err, &r) {
		t.Errorf("Attest() error = %v, want %v and no refusal", err, boom)
	}
}

func TestNewRequiresTrustDomainAndStore(t *testing.T) {
	if _, err := jointoken.New(jointoken.Config{Tokens: &jointokentest.Store{}}); err == nil {
		t.Error("New() without a trust domain succeeded")
	}
	if _, err := jointoken.New(jointoken.Config{TrustDomain: td}); err == nil {
		t.Error("New() without a store succeeded")
	}
}

func TestEvidenceSendsTheSecret(t *testing.T) {
	var e node.Evidence = jointoken.Evidence("s3cret")
	p, err := e.Payload(t.Context())
	if err != nil || string(p) != "s3cret" || e.Type() != "join_token" {
		t.Errorf("evidence = %s %q (%v), want join_token \"s3cret\"", e.Type(), p, err)
	}
}
