package storetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/internal/store"
)

// An unused token can be revoked: it is gone, its secret is as unknown as one never issued, and the revoke
// is one audited change. A used or unknown token cannot be revoked.
func testRevokeJoinToken(t *testing.T, h harness) {
	ctx := context.Background()
	s := h.new(t)
	hash := func(secret string) []byte { h := sha256.Sum256([]byte(secret)); return h[:] }
	agent := store.Agent{ID: ID(t, "spiffe://kith.test/kith/agent/join_token/node1"), AttestationType: "join_token",
		Selectors: []attestation.Selector{Selector("join_token:name:node1")}, SerialNumber: "01", ExpiresAt: t0.Add(time.Hour)}
	unused, err := s.CreateJoinToken(ctx, "test", store.JoinToken{Name: "node2", Hash: hash("s1"), ExpiresAt: t0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	used, err := s.CreateJoinToken(ctx, "test", store.JoinToken{Name: "node1", Hash: hash("s2"), ExpiresAt: t0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.UseJoinToken(ctx, hash("s2"), t0, agent); err != nil {
		t.Fatal(err)
	}

	t.Run("an unused token is revoked in one audited change and can no longer be used", func(t *testing.T) {
		before, _ := s.Revision(ctx)
		got, err := s.RevokeJoinToken(ctx, "cli:uid=0", unused.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(unused, got, IDComparer); diff != "" {
			t.Errorf("RevokeJoinToken (-want +got):\n%s", diff)
		}
		if after, _ := s.Revision(ctx); after != before+1 {
			t.Errorf("revision moved from %d to %d, want one change", before, after)
		}
		evs, err := s.ListAudit(ctx, store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		last := evs[len(evs)-1]
		if diff := cmp.Diff([]string{"cli:uid=0", "token.revoke", unused.ID}, []string{last.Actor, last.Action, last.Target}); diff != "" {
			t.Errorf("last audit event (-want +got):\n%s", diff)
		}
		if _, err := s.LookupJoinToken(ctx, hash("s1")); !errors.Is(err, store.ErrTokenInvalid) {
			t.Errorf("LookupJoinToken after revoke: %v, want ErrTokenInvalid", err)
		}
		if _, _, err := s.UseJoinToken(ctx, hash("s1"), t0, agent); !errors.Is(err, store.ErrTokenInvalid) {
			t.Errorf("UseJoinToken after revoke: %v, want ErrTokenInvalid", err)
		}
		if _, err := s.CreateJoinToken(ctx, "test", store.JoinToken{Name: "node2", Hash: hash("s3"), ExpiresAt: t0.Add(time.Hour)}); err != nil {
			t.Errorf("a revoked token's name is free again: %v", err)
		}
	})

	for _, tc := range []struct {
		name string
		id   string
		want error
	}{
		{"an unknown token is not found", "nope", store.ErrNotFound},
		{"a revoked token is not found", unused.ID, store.ErrNotFound},
		{"a used token cannot be revoked", used.ID, store.ErrFailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := s.Revision(ctx)
			if _, err := s.RevokeJoinToken(ctx, "test", tc.id); !errors.Is(err, tc.want) {
				t.Fatalf("RevokeJoinToken error = %v, want %v", err, tc.want)
			}
			if after, _ := s.Revision(ctx); after != before {
				t.Errorf("revision moved from %d to %d on a refused revoke", before, after)
			}
		})
	}
}

// A ban evicts the agent and survives its re-attestation (the record is replaced) until it is lifted.
func testBanAgent(t *testing.T, h harness) {
	ctx := context.Background()
	s := h.new(t)
	a := store.Agent{ID: ID(t, "spiffe://kith.test/kith/agent/join_token/n1"), AttestationType: "join_token", SerialNumber: "01"}
	if _, err := s.UpsertAgent(ctx, "system", "agent.attest", a); err != nil {
		t.Fatal(err)
	}
	lastAction := func(t *testing.T) string {
		t.Helper()
		evs, err := s.ListAudit(ctx, store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		return evs[len(evs)-1].Action
	}

	banned, err := s.BanAgent(ctx, "cli:uid=0", a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !banned.Banned || !banned.Evicted || lastAction(t) != "agent.ban" {
		t.Errorf("BanAgent = banned %v, evicted %v, audit %s; want banned, evicted, agent.ban", banned.Banned, banned.Evicted, lastAction(t))
	}
	got, err := s.GetAgent(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(banned, got, IDComparer); diff != "" {
		t.Errorf("GetAgent after ban (-want +got):\n%s", diff)
	}
	a.SerialNumber = "02"
	if got, err := s.UpsertAgent(ctx, "system", "agent.attest", a); err != nil || !got.Banned {
		t.Errorf("UpsertAgent of a banned agent = banned %v, %v; want the ban kept", got.Banned, err)
	}
	unbanned, err := s.UnbanAgent(ctx, "cli:uid=0", a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if unbanned.Banned || lastAction(t) != "agent.unban" {
		t.Errorf("UnbanAgent = banned %v, audit %s; want not banned, agent.unban", unbanned.Banned, lastAction(t))
	}
	for name, f := range map[string]func() error{
		"ban":   func() error { _, err := s.BanAgent(ctx, "test", ID(t, "spiffe://kith.test/nope")); return err },
		"unban": func() error { _, err := s.UnbanAgent(ctx, "test", ID(t, "spiffe://kith.test/nope")); return err },
	} {
		if err := f(); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s of an unknown agent: %v, want ErrNotFound", name, err)
		}
	}
}
