package storetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/internal/store"
)

func testJoinTokens(t *testing.T, h harness) {
	ctx := context.Background()
	s := h.new(t)
	hash := func(secret string) []byte { h := sha256.Sum256([]byte(secret)); return h[:] }
	agentID := ID(t, "spiffe://kith.test/kith/agent/join_token/node1")
	agent := store.Agent{
		ID:              agentID,
		AttestationType: "join_token",
		Selectors:       []attestation.Selector{Selector("join_token:name:node1")},
		SerialNumber:    "0abc",
		ExpiresAt:       t0.Add(time.Hour),
	}

	tok, err := s.CreateJoinToken(ctx, "cli:uid=0", store.JoinToken{Name: "node1", Hash: hash("s1"), ExpiresAt: t0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if tok.ID == "" || tok.CreatedAt.IsZero() {
		t.Fatalf("CreateJoinToken: ID %q, CreatedAt %v", tok.ID, tok.CreatedAt)
	}
	expired, err := s.CreateJoinToken(ctx, "cli:uid=0", store.JoinToken{Hash: hash("s2"), ExpiresAt: t0.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("a name is unique among tokens", func(t *testing.T) {
		_, err := s.CreateJoinToken(ctx, "test", store.JoinToken{Name: "node1", Hash: hash("s3"), ExpiresAt: t0.Add(time.Hour)})
		if !errors.Is(err, store.ErrAlreadyExists) {
			t.Fatalf("CreateJoinToken error = %v, want ErrAlreadyExists", err)
		}
	})

	t.Run("list returns the tokens", func(t *testing.T) {
		got, err := s.ListJoinTokens(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]store.JoinToken{tok, expired}, got, IDComparer); diff != "" {
			t.Errorf("ListJoinTokens (-want +got):\n%s", diff)
		}
	})

	t.Run("lookup finds a token by the hash of its secret without using it", func(t *testing.T) {
		got, err := s.LookupJoinToken(ctx, hash("s1"))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tok, got, IDComparer); diff != "" {
			t.Errorf("LookupJoinToken (-want +got):\n%s", diff)
		}
	})

	t.Run("lookup of an unknown secret is an invalid token", func(t *testing.T) {
		if _, err := s.LookupJoinToken(ctx, hash("nope")); !errors.Is(err, store.ErrTokenInvalid) {
			t.Fatalf("LookupJoinToken error = %v, want ErrTokenInvalid", err)
		}
	})

	for _, tc := range []struct {
		name string
		hash []byte
		now  time.Time
	}{
		{"an unknown token is invalid", hash("nope"), t0.Add(time.Second)},
		{"an expired token is invalid", hash("s2"), t0.Add(time.Minute)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := s.Revision(ctx)
			_, _, err := s.UseJoinToken(ctx, tc.hash, tc.now, agent)
			if !errors.Is(err, store.ErrTokenInvalid) {
				t.Fatalf("UseJoinToken error = %v, want ErrTokenInvalid", err)
			}
			if after, _ := s.Revision(ctx); after != before {
				t.Errorf("revision moved from %d to %d on a refused token", before, after)
			}
		})
	}

	t.Run("a valid token is used once and records the agent", func(t *testing.T) {
		now := t0.Add(10 * time.Minute)
		used, got, err := s.UseJoinToken(ctx, hash("s1"), now, agent)
		if err != nil {
			t.Fatal(err)
		}
		wantTok := tok
		wantTok.UsedAt, wantTok.UsedBy = now, agentID
		if diff := cmp.Diff(wantTok, used, IDComparer); diff != "" {
			t.Errorf("UseJoinToken token (-want +got):\n%s", diff)
		}
		wantAgent := agent
		wantAgent.CreatedAt, wantAgent.UpdatedAt = now, now
		if diff := cmp.Diff(wantAgent, got, IDComparer); diff != "" {
			t.Errorf("UseJoinToken agent (-want +got):\n%s", diff)
		}
		stored, err := s.GetAgent(ctx, agentID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(wantAgent, stored, IDComparer); diff != "" {
			t.Errorf("GetAgent (-want +got):\n%s", diff)
		}
		if _, _, err := s.UseJoinToken(ctx, hash("s1"), now, agent); !errors.Is(err, store.ErrTokenInvalid) {
			t.Errorf("second UseJoinToken error = %v, want ErrTokenInvalid", err)
		}
		evs, err := s.ListAudit(ctx, store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		last := evs[len(evs)-1]
		if last.Action != "agent.attest" || last.Target != agentID.String() {
			t.Errorf("last audit event = %s %s, want agent.attest %s", last.Action, last.Target, agentID)
		}
		for _, ev := range evs {
			if strings.Contains(ev.Detail, fmt.Sprintf("%x", hash("s1"))) {
				t.Errorf("audit event %d detail contains the token hash: %s", ev.Seq, ev.Detail)
			}
		}
	})
}

// A node that was evicted re-joins under the same name, and so the same agent SPIFFE ID; a name that still
// stands for an unused token or an active agent is refused.
func testTokenNameReuse(t *testing.T, h harness) {
	ctx := context.Background()
	s := h.new(t)
	hash := func(secret string) []byte { h := sha256.Sum256([]byte(secret)); return h[:] }
	agent := store.Agent{ID: ID(t, "spiffe://kith.test/kith/agent/join_token/node1"), AttestationType: "join_token",
		Selectors: []attestation.Selector{Selector("join_token:name:node1")}, SerialNumber: "01", ExpiresAt: t0.Add(time.Hour)}
	create := func(name, secret string, expires time.Time) error {
		_, err := s.CreateJoinToken(ctx, "test", store.JoinToken{Name: name, Hash: hash(secret), ExpiresAt: expires})
		return err
	}

	if err := create("node1", "s1", t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := create("node1", "s2", t0.Add(time.Hour)); !errors.Is(err, store.ErrAlreadyExists) || !strings.Contains(err.Error(), "not used yet") {
		t.Fatalf("second token while the first is unused: %v, want ErrAlreadyExists (not used yet)", err)
	}
	if _, _, err := s.UseJoinToken(ctx, hash("s1"), t0, agent); err != nil {
		t.Fatal(err)
	}
	err := create("node1", "s2", t0.Add(time.Hour))
	if !errors.Is(err, store.ErrAlreadyExists) || !strings.Contains(err.Error(), "kith agents evict spiffe://kith.test/kith/agent/join_token/node1") {
		t.Fatalf("token for a name whose agent is active: %v, want ErrAlreadyExists telling to evict", err)
	}
	if _, err := s.EvictAgent(ctx, "test", agent.ID); err != nil {
		t.Fatal(err)
	}
	if err := create("node1", "s2", t0.Add(time.Hour)); err != nil {
		t.Fatalf("token for the name of an evicted agent: %v", err)
	}
	agent.SerialNumber = "02"
	if _, _, err := s.UseJoinToken(ctx, hash("s2"), t0, agent); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetAgent(ctx, agent.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Evicted || got.SerialNumber != "02" {
		t.Errorf("re-joined agent: evicted %v, serial %s; want active with the new serial 02", got.Evicted, got.SerialNumber)
	}
	tokens, err := s.ListJoinTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(tokens) != 2 || tokens[0].Name != "node1" || tokens[1].Name != "node1" {
		t.Errorf("tokens = %+v, want both kept under the name node1", tokens)
	}

	// An expired, unused token does not hold its name either.
	if err := create("node2", "s3", t0.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := create("node2", "s4", t0.Add(time.Hour)); err != nil {
		t.Fatalf("token for the name of an expired token: %v", err)
	}
}

func testAgents(t *testing.T, h harness) {
	ctx := context.Background()
	s := h.new(t)
	a := store.Agent{ID: ID(t, "spiffe://kith.test/kith/agent/join_token/n1"), AttestationType: "join_token", SerialNumber: "01"}

	first, err := s.UpsertAgent(ctx, "system", "agent.attest", a)
	if err != nil {
		t.Fatal(err)
	}
	a.SerialNumber = "02"
	renewed, err := s.UpsertAgent(ctx, "agent:"+a.ID.String(), "agent.renew", a)
	if err != nil {
		t.Fatal(err)
	}
	if !renewed.CreatedAt.Equal(first.CreatedAt) || !renewed.UpdatedAt.After(first.UpdatedAt) {
		t.Errorf("renew: created %v (first %v), updated %v", renewed.CreatedAt, first.CreatedAt, renewed.UpdatedAt)
	}

	t.Run("evict marks the agent evicted", func(t *testing.T) {
		ev, err := s.EvictAgent(ctx, "cli:uid=0", a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !ev.Evicted || ev.SerialNumber != "02" {
			t.Errorf("EvictAgent = %+v", ev)
		}
		list, err := s.ListAgents(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]store.Agent{ev}, list, IDComparer); diff != "" {
			t.Errorf("ListAgents (-want +got):\n%s", diff)
		}
	})

	t.Run("evicting an unknown agent is not found", func(t *testing.T) {
		if _, err := s.EvictAgent(ctx, "test", ID(t, "spiffe://kith.test/nope")); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("EvictAgent error = %v, want ErrNotFound", err)
		}
		if _, err := s.GetAgent(ctx, ID(t, "spiffe://kith.test/nope")); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetAgent error = %v, want ErrNotFound", err)
		}
	})
}
