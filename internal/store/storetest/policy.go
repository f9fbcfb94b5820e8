package storetest

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kithid/kith/internal/store"
)

func testPolicies(t *testing.T, h harness) {
	ctx := context.Background()
	s := h.new(t)

	t.Run("a new store has no active policy", func(t *testing.T) {
		if _, err := s.ActivePolicy(ctx); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("ActivePolicy error = %v, want ErrNotFound", err)
		}
		hist, err := s.PolicyHistory(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(hist) != 0 {
			t.Errorf("PolicyHistory = %v, want none", hist)
		}
	})

	r1 := store.PolicyBundle{Revision: "r1", Status: store.PolicyOK, Bundle: []byte("bundle-1"), Modules: map[string]string{"a.rego": "package a"}}
	r2 := store.PolicyBundle{Revision: "r2", Status: store.PolicyOK, Bundle: []byte("bundle-2"), Modules: map[string]string{"b.rego": "package b"}}
	bad := store.PolicyBundle{Revision: "r3", Status: store.PolicyRejected, Error: "a.rego:1: parse error"}
	if err := s.RecordPolicy(ctx, "system", r1, true); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordPolicy(ctx, "system", r2, true); err != nil {
		t.Fatal(err)
	}
	revBeforeReject := mustRevision(t, s)
	if err := s.RecordPolicy(ctx, "system", bad, false); err != nil {
		t.Fatal(err)
	}

	t.Run("the last activated ok bundle is active, with its bundle and modules", func(t *testing.T) {
		got, err := s.ActivePolicy(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := r2
		want.Active, want.CreatedAt = true, got.CreatedAt
		if got.CreatedAt.IsZero() {
			t.Error("ActivePolicy has no CreatedAt")
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("ActivePolicy (-want +got):\n%s", diff)
		}
	})

	t.Run("a rejected attempt is history, not a change", func(t *testing.T) {
		if rev := mustRevision(t, s); rev != revBeforeReject {
			t.Errorf("Revision = %d after a rejected policy, want %d", rev, revBeforeReject)
		}
		if diff := cmp.Diff([]string{"policy.reject"}, auditActions(t, s, "r3")); diff != "" {
			t.Errorf("audit actions for r3 (-want +got):\n%s", diff)
		}
	})

	t.Run("history is newest first without bundles and modules, and limited", func(t *testing.T) {
		hist, err := s.PolicyHistory(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		type row struct {
			Revision, Status, Error string
			Active, Pinned, Bundle  bool
			Modules                 int
		}
		var got []row
		for _, p := range hist {
			got = append(got, row{p.Revision, p.Status, p.Error, p.Active, p.Pinned, p.Bundle != nil, len(p.Modules)})
		}
		want := []row{
			{Revision: "r3", Status: store.PolicyRejected, Error: "a.rego:1: parse error"},
			{Revision: "r2", Status: store.PolicyOK, Active: true},
			{Revision: "r1", Status: store.PolicyOK},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("PolicyHistory (-want +got):\n%s", diff)
		}
		for i := 1; i < len(hist); i++ {
			if hist[i].CreatedAt.After(hist[i-1].CreatedAt) {
				t.Errorf("PolicyHistory: %s (%v) listed after the older %s (%v)", hist[i].Revision, hist[i].CreatedAt, hist[i-1].Revision, hist[i-1].CreatedAt)
			}
		}
		two, err := s.PolicyHistory(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(two) != 2 || two[0].Revision != "r3" {
			t.Errorf("PolicyHistory(2) = %v, want r3 and r2", two)
		}
	})

	t.Run("rolling back pins an earlier revision and is a change", func(t *testing.T) {
		before := mustRevision(t, s)
		got, err := s.ActivatePolicy(ctx, "cli:uid=0", "r1", true)
		if err != nil {
			t.Fatal(err)
		}
		if got.Revision != "r1" || !got.Active || !got.Pinned || string(got.Bundle) != "bundle-1" {
			t.Errorf("ActivatePolicy = %+v, want r1 active and pinned with its bundle", got)
		}
		active, err := s.ActivePolicy(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(got, active); diff != "" {
			t.Errorf("ActivePolicy after rollback (-want +got):\n%s", diff)
		}
		changes, err := s.ChangesSince(ctx, before)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]store.Change{{Revision: before + 1, Kind: store.KindPolicy, ID: "r1"}}, changes); diff != "" {
			t.Errorf("ChangesSince (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"policy.activate", "policy.rollback"}, auditActions(t, s, "r1")); diff != "" {
			t.Errorf("audit actions for r1 (-want +got):\n%s", diff)
		}
	})

	t.Run("unpin returns to the newest good revision with one policy.unpin row", func(t *testing.T) {
		before := mustRevision(t, s)
		got, unpinned, err := s.UnpinPolicy(ctx, "cli:uid=0")
		if err != nil {
			t.Fatal(err)
		}
		if got.Revision != "r2" || !got.Active || got.Pinned || !unpinned {
			t.Errorf("UnpinPolicy = %+v, %v; want r2 active, not pinned, unpinned", got, unpinned)
		}
		if diff := cmp.Diff([]string{"policy.activate", "policy.unpin"}, auditActions(t, s, "r2")); diff != "" {
			t.Errorf("audit actions for r2 (-want +got):\n%s", diff)
		}
		if after := mustRevision(t, s); after != before+1 {
			t.Errorf("revision %d after unpin, want %d", after, before+1)
		}
	})

	t.Run("unpin with nothing pinned changes nothing and writes no row", func(t *testing.T) {
		before := mustRevision(t, s)
		evs, err := s.ListAudit(ctx, store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		got, unpinned, err := s.UnpinPolicy(ctx, "cli:uid=0")
		if err != nil {
			t.Fatal(err)
		}
		if got.Revision != "r2" || unpinned {
			t.Errorf("UnpinPolicy = %s, unpinned %v; want r2 and false", got.Revision, unpinned)
		}
		after, err := s.ListAudit(ctx, store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(after) != len(evs) || mustRevision(t, s) != before {
			t.Errorf("unpin with nothing pinned wrote %d audit rows and moved the revision %d -> %d", len(after)-len(evs), before, mustRevision(t, s))
		}
	})

	t.Run("activating again unpins", func(t *testing.T) {
		if _, err := s.ActivatePolicy(ctx, "cli:uid=0", "r1", true); err != nil {
			t.Fatal(err)
		}
		got, err := s.ActivatePolicy(ctx, "cli:uid=0", "r2", false)
		if err != nil {
			t.Fatal(err)
		}
		if got.Revision != "r2" || !got.Active || got.Pinned {
			t.Errorf("ActivatePolicy = %+v, want r2 active and not pinned", got)
		}
		hist, err := s.PolicyHistory(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range hist {
			if p.Active != (p.Revision == "r2") || p.Pinned {
				t.Errorf("history row %s: active %v pinned %v; want only r2 active, none pinned", p.Revision, p.Active, p.Pinned)
			}
		}
	})

	t.Run("an unknown or rejected revision cannot be activated", func(t *testing.T) {
		for _, rev := range []string{"nope", "r3"} {
			before := mustRevision(t, s)
			if _, err := s.ActivatePolicy(ctx, "test", rev, true); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("ActivatePolicy(%s) error = %v, want ErrNotFound", rev, err)
			}
			if after := mustRevision(t, s); after != before {
				t.Errorf("ActivatePolicy(%s) moved the revision from %d to %d", rev, before, after)
			}
		}
	})
	MustVerify(t, s)
}

func testAgentPolicies(t *testing.T, h harness) {
	ctx := context.Background()
	s := h.new(t)
	const a1, a2 = "spiffe://kith.test/kith/agent/join_token/n1", "spiffe://kith.test/kith/agent/join_token/n2"
	if err := s.SetAgentPolicy(ctx, a2, "r1", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.SetAgentPolicy(ctx, a1, "r1", ""); err != nil {
		t.Fatal(err)
	}
	first, err := s.AgentPolicies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 2 || first[0].AgentID != a1 || first[1].AgentID != a2 || first[0].Since.IsZero() {
		t.Fatalf("AgentPolicies = %+v, want n1 then n2 with a since time", first)
	}

	t.Run("the same revision keeps its since and updates the error", func(t *testing.T) {
		if err := s.SetAgentPolicy(ctx, a1, "r1", "bundle signature invalid"); err != nil {
			t.Fatal(err)
		}
		got, err := s.AgentPolicies(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := store.AgentPolicy{AgentID: a1, Revision: "r1", Since: first[0].Since, Error: "bundle signature invalid"}
		if diff := cmp.Diff(want, got[0]); diff != "" {
			t.Errorf("AgentPolicies[0] (-want +got):\n%s", diff)
		}
	})

	t.Run("a new revision starts a new since", func(t *testing.T) {
		if err := s.SetAgentPolicy(ctx, a1, "r2", ""); err != nil {
			t.Fatal(err)
		}
		got, err := s.AgentPolicies(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got[0].Revision != "r2" || got[0].Error != "" || !got[0].Since.After(first[0].Since) {
			t.Errorf("AgentPolicies[0] = %+v, want r2 without error since after %v", got[0], first[0].Since)
		}
	})

	t.Run("reports are not changes and are not audited", func(t *testing.T) {
		if rev := mustRevision(t, s); rev != 0 {
			t.Errorf("Revision = %d, want 0", rev)
		}
		evs, err := s.ListAudit(ctx, store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 0 {
			t.Errorf("ListAudit = %d events, want none", len(evs))
		}
	})
}

func testPolicyLabels(t *testing.T, h harness) {
	ctx := context.Background()
	s := h.new(t)
	first := map[string]map[string]string{
		"spiffe://kith.test/a": {"env": "prod", "team": "pay"},
		"spiffe://kith.test/b": {"env": "dev"},
	}
	second := map[string]map[string]string{"spiffe://kith.test/c": {"tier": "1"}}

	t.Run("no labels were set: none are returned", func(t *testing.T) {
		got, err := s.PolicyLabels(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(map[string]map[string]string{}, got); diff != "" {
			t.Errorf("PolicyLabels (-want +got):\n%s", diff)
		}
	})
	t.Run("labels set are returned", func(t *testing.T) {
		if err := s.SetPolicyLabels(ctx, first); err != nil {
			t.Fatal(err)
		}
		got, err := s.PolicyLabels(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(first, got); diff != "" {
			t.Errorf("PolicyLabels (-want +got):\n%s", diff)
		}
	})
	t.Run("setting labels replaces all of them", func(t *testing.T) {
		if err := s.SetPolicyLabels(ctx, second); err != nil {
			t.Fatal(err)
		}
		got, err := s.PolicyLabels(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(second, got); diff != "" {
			t.Errorf("PolicyLabels (-want +got):\n%s", diff)
		}
	})
	t.Run("labels are not changes and are not audited", func(t *testing.T) {
		if rev := mustRevision(t, s); rev != 0 {
			t.Errorf("Revision = %d, want 0", rev)
		}
		evs, err := s.ListAudit(ctx, store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 0 {
			t.Errorf("ListAudit = %d events, want none", len(evs))
		}
	})
}
