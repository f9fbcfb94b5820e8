package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/internal/store"
)

const (
	payments = "spiffe://kith.test/ns/prod/sa/payments"
	frontend = "spiffe://kith.test/ns/prod/sa/frontend"
)

// grantFor returns grant g-n from frontend to workload n.
func grantFor(n int) grant.Grant {
	return grant.Grant{ID: fmt.Sprintf("g-%d", n), Caller: frontend, Target: fmt.Sprintf("spiffe://kith.test/workload/%d", n), Source: "cli"}
}

func testGrants(t *testing.T, h harness) {
	ctx := context.Background()
	s := h.new(t)

	in := grant.Grant{ID: "g-1", Caller: frontend, Target: payments, Methods: []string{"GET", "POST"},
		Paths: []string{"/api/*"}, ExpiresAt: t0.Add(8 * time.Hour), Reason: "checkout", CreatedBy: "cli:uid=0", Source: "cli"}
	created, err := s.CreateGrant(ctx, "cli:uid=0", in)
	if err != nil {
		t.Fatal(err)
	}
	want := in
	want.CreatedAt = created.CreatedAt
	if created.CreatedAt.IsZero() {
		t.Errorf("CreateGrant did not set CreatedAt")
	}
	if diff := cmp.Diff(want, created); diff != "" {
		t.Errorf("CreateGrant returned (-want +got):\n%s", diff)
	}

	t.Run("get reads the grant back exactly", func(t *testing.T) {
		got, err := s.GetGrant(ctx, "g-1")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(created, got); diff != "" {
			t.Errorf("GetGrant (-want +got):\n%s", diff)
		}
	})

	t.Run("path expressions, headers, ports, exceptions and deny rules are kept", func(t *testing.T) {
		ext := grant.Grant{ID: "smi-x", Caller: "*", Target: payments, PathRegex: []string{"/api/.*"}, Headers: map[string]string{"user-agent": ".*Android.*"},
			Ports: []uint32{8080, 9090}, NotMethods: []string{"DELETE"}, NotPaths: []string{"/admin/*"}, NotCallers: []string{frontend},
			Deny: true, Reason: "route all", Source: "smi:default/x"}
		if err := s.ReplaceGrantsFromSource(ctx, "test", "smi:default/", "smi:default", []grant.Grant{ext}); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetGrant(ctx, "smi-x")
		if err != nil {
			t.Fatal(err)
		}
		ext.CreatedAt = got.CreatedAt
		if diff := cmp.Diff(ext, got); diff != "" {
			t.Errorf("GetGrant (-want +got):\n%s", diff)
		}
		if err := s.ReplaceGrantsFromSource(ctx, "test", "smi:default/", "smi:default", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetGrant(ctx, "smi-x"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetGrant after replacing the source by nothing: %v, want ErrNotFound", err)
		}
	})

	var autoID string
	t.Run("an empty id is assigned", func(t *testing.T) {
		g, err := s.CreateGrant(ctx, "test", grant.Grant{Caller: "spiffe://kith.test/ns/dev/*", Target: payments, Source: "cli"})
		if err != nil {
			t.Fatal(err)
		}
		if g.ID == "" {
			t.Fatal("CreateGrant left the ID empty")
		}
		autoID = g.ID
		if _, err := s.GetGrant(ctx, g.ID); err != nil {
			t.Errorf("GetGrant(%s): %v", g.ID, err)
		}
	})

	t.Run("list orders by target, caller and id", func(t *testing.T) {
		for _, g := range []grant.Grant{
			{ID: "g-3", Caller: frontend, Target: "spiffe://kith.test/ns/prod/sa/orders", Source: "cli"},
			{ID: "g-0", Caller: frontend, Target: payments, Source: "cli"},
		} {
			if _, err := s.CreateGrant(ctx, "test", g); err != nil {
				t.Fatal(err)
			}
		}
		all, err := s.ListGrants(ctx, store.GrantFilter{})
		if err != nil {
			t.Fatal(err)
		}
		var got [][3]string
		for _, g := range all {
			got = append(got, [3]string{g.Target, g.Caller, g.ID})
		}
		want := [][3]string{
			{"spiffe://kith.test/ns/prod/sa/orders", frontend, "g-3"},
			{payments, "spiffe://kith.test/ns/dev/*", autoID},
			{payments, frontend, "g-0"},
			{payments, frontend, "g-1"},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("ListGrants (target, caller, id) (-want +got):\n%s", diff)
		}
	})

	t.Run("delete returns the grant and then it is gone", func(t *testing.T) {
		got, err := s.DeleteGrant(ctx, "cli:uid=0", "g-1")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(created, got); diff != "" {
			t.Errorf("DeleteGrant (-want +got):\n%s", diff)
		}
		if _, err := s.GetGrant(ctx, "g-1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetGrant after delete error = %v, want ErrNotFound", err)
		}
		if _, err := s.DeleteGrant(ctx, "test", "g-1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("second DeleteGrant error = %v, want ErrNotFound", err)
		}
	})

	t.Run("audit records create and revoke, and each is a change", func(t *testing.T) {
		if diff := cmp.Diff([]string{"grant.create", "grant.revoke"}, auditActions(t, s, "g-1")); diff != "" {
			t.Errorf("audit actions for g-1 (-want +got):\n%s", diff)
		}
		changes, err := s.ChangesSince(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		var g1 []store.Change
		for _, c := range changes {
			if c.ID == "g-1" {
				g1 = append(g1, store.Change{Kind: c.Kind, ID: c.ID, Deleted: c.Deleted})
			}
		}
		wantChanges := []store.Change{{Kind: store.KindGrant, ID: "g-1"}, {Kind: store.KindGrant, ID: "g-1", Deleted: true}}
		if diff := cmp.Diff(wantChanges, g1); diff != "" {
			t.Errorf("changes of g-1 (-want +got):\n%s", diff)
		}
		MustVerify(t, s)
	})
}

func testReplaceGrants(t *testing.T, h harness) {
	ctx := context.Background()
	s := h.new(t)
	cli, err := s.CreateGrant(ctx, "cli:uid=0", grant.Grant{ID: "g-cli", Caller: frontend, Target: payments, Source: "cli"})
	if err != nil {
		t.Fatal(err)
	}
	first := []grant.Grant{
		{ID: "git-a", Caller: frontend, Target: payments, Source: "git:aaa"},
		{ID: "git-b", Caller: frontend, Target: "spiffe://kith.test/ns/prod/*", Source: "git:aaa"},
	}
	if err := s.ReplaceGrantsFromSource(ctx, "system", "git:", "git:aaa", first); err != nil {
		t.Fatal(err)
	}
	before := mustRevision(t, s)
	second := []grant.Grant{
		{ID: "git-b", Caller: frontend, Target: "spiffe://kith.test/ns/prod/*", Methods: []string{"GET"}, Source: "git:bbb"},
		{ID: "git-c", Caller: "spiffe://kith.test/ns/dev/*", Target: payments, Source: "git:bbb"},
	}
	if err := s.ReplaceGrantsFromSource(ctx, "system", "git:", "git:bbb", second); err != nil {
		t.Fatal(err)
	}

	t.Run("grants from the source are replaced and others kept", func(t *testing.T) {
		all, err := s.ListGrants(ctx, store.GrantFilter{})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]grant.Grant{}
		for _, g := range all {
			got[g.ID] = g
		}
		if len(got) != 3 {
			t.Fatalf("ListGrants = %v, want g-cli, git-b and git-c", all)
		}
		if diff := cmp.Diff(cli, got["g-cli"]); diff != "" {
			t.Errorf("the CLI grant changed (-want +got):\n%s", diff)
		}
		for _, g := range second {
			stored := got[g.ID]
			if stored.CreatedAt.IsZero() {
				t.Errorf("grant %s has no CreatedAt", g.ID)
			}
			g.CreatedAt = stored.CreatedAt
			if diff := cmp.Diff(g, stored); diff != "" {
				t.Errorf("grant %s (-want +got):\n%s", g.ID, diff)
			}
		}
	})

	t.Run("the replacement is one revision with a change per grant put or removed", func(t *testing.T) {
		if rev := mustRevision(t, s); rev != before+1 {
			t.Errorf("Revision = %d, want %d", rev, before+1)
		}
		changes, err := s.ChangesSince(ctx, before)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, c := range changes {
			if c.Kind != store.KindGrant || c.Revision != before+1 {
				t.Errorf("change %+v, want a grant change at revision %d", c, before+1)
			}
			got[c.ID] = c.Deleted
		}
		if diff := cmp.Diff(map[string]bool{"git-a": true, "git-b": false, "git-c": false}, got); diff != "" {
			t.Errorf("changes (id -> deleted) (-want +got):\n%s", diff)
		}
		// Each sync is audited once, with the commit it comes from as the target.
		rows := map[string][]string{}
		for _, target := range []string{"git:", "git:aaa", "git:bbb"} {
			if a := auditActions(t, s, target); a != nil {
				rows[target] = a
			}
		}
		if diff := cmp.Diff(map[string][]string{"git:aaa": {"grant.sync"}, "git:bbb": {"grant.sync"}}, rows); diff != "" {
			t.Errorf("grant.sync audit rows by target (-want +got):\n%s", diff)
		}
	})
}

func testTargetModes(t *testing.T, h harness) {
	ctx := context.Background()
	s := h.new(t)
	modes, err := s.TargetModes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(modes) != 0 {
		t.Errorf("TargetModes of a new store = %v, want none", modes)
	}
	if err := s.SetTargetMode(ctx, "cli:uid=0", payments, grant.ModeAudit); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTargetMode(ctx, "cli:uid=0", frontend, grant.ModeAudit); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTargetMode(ctx, "cli:uid=0", frontend, grant.ModeEnforce); err != nil {
		t.Fatal(err)
	}
	modes, err = s.TargetModes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]grant.Mode{payments: grant.ModeAudit}, modes); diff != "" {
		t.Errorf("TargetModes (-want +got):\n%s", diff)
	}
	changes, err := s.ChangesSince(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.Change{
		{Revision: 1, Kind: store.KindMode, ID: payments},
		{Revision: 2, Kind: store.KindMode, ID: frontend},
		{Revision: 3, Kind: store.KindMode, ID: frontend, Deleted: true},
	}
	if diff := cmp.Diff(want, changes); diff != "" {
		t.Errorf("ChangesSince(0) (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"target.mode", "target.mode"}, auditActions(t, s, frontend)); diff != "" {
		t.Errorf("audit actions for %s (-want +got):\n%s", frontend, diff)
	}
}
