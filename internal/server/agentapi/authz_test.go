package agentapi

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"sort"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/internal/grantpb"
	"github.com/kithid/kith/internal/store"
	"github.com/kithid/kith/internal/store/sqlite"
)

// legacyAuthzData is how each Sync stream built its authorization data before it was shared per store
// revision: every grant, mode and label read from the store (repository labels merged under entry
// labels), then filtered for the IDs the agent serves.
func legacyAuthzData(t *testing.T, st *sqlite.Store, sent map[string]string) *agentv1.AuthzData {
	t.Helper()
	ctx := context.Background()
	grants, err := st.ListGrants(ctx, store.GrantFilter{})
	if err != nil {
		t.Fatal(err)
	}
	modes, err := st.TargetModes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := st.ListEntries(ctx, store.EntryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	gitLabels, err := st.PolicyLabels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]map[string]string{}
	for _, e := range entries {
		if len(e.Labels) == 0 {
			continue
		}
		id := e.SPIFFEID.String()
		if labels[id] == nil {
			labels[id] = map[string]string{}
		}
		maps.Copy(labels[id], e.Labels)
	}
	for id, l := range gitLabels {
		if labels[id] == nil {
			labels[id] = map[string]string{}
		}
		for k, v := range l {
			if _, ok := labels[id][k]; !ok {
				labels[id][k] = v
			}
		}
	}
	served := map[string]bool{}
	for _, id := range sent {
		served[id] = true
	}
	relevant := func(target string) bool {
		if served[target] {
			return true
		}
		if strings.HasSuffix(target, "*") {
			for id := range served {
				if grant.Covers(target, id) {
					return true
				}
			}
		}
		return false
	}
	out := &agentv1.AuthzData{Modes: map[string]string{}}
	for _, g := range grants {
		if relevant(g.Target) {
			out.Grants = append(out.Grants, grantpb.ToProto(g))
		}
	}
	for t, m := range modes {
		if served[t] {
			out.Modes[t] = string(m)
		}
	}
	ids := make([]string, 0, len(labels))
	for id := range labels {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		out.Labels = append(out.Labels, &agentv1.IdentityLabels{SpiffeId: id, Labels: labels[id]})
	}
	return out
}

func marshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAuthzDataAsBefore checks that every agent receives byte for byte the authorization data it received
// when each stream read and filtered everything itself, over a varied store: exact, prefix and
// trust-domain-wide targets, targets nobody serves, audit modes on served and unserved targets, entry and
// repository labels (overlapping), an agent serving one ID twice and an agent serving nothing.
func TestAuthzDataAsBefore(t *testing.T) {
	ctx := context.Background()
	f := newAuthzFixture(t, 12, 4, 600)
	st := f.st
	// A second entry for an ID agent 0 already serves, and an agent with no entries.
	for id, sid := range f.served[1] {
		f.served[0]["dup-"+id] = sid
		break
	}
	f.agents = append(f.agents, f.agents[0])
	f.served = append(f.served, map[string]string{})
	extra := []authz.Grant{
		{ID: "g-td", Caller: "spiffe://example.org/ns/x/sa/y", Target: "spiffe://example.org/*"},
		{ID: "g-ns", Caller: "spiffe://example.org/ns/x/sa/y", Target: "spiffe://example.org/ns/*", Methods: []string{"GET"}},
		{ID: "g-other-td", Caller: "spiffe://example.org/ns/x/sa/y", Target: "spiffe://other.org/*"},
		{ID: "g-deep", Caller: "spiffe://example.org/ns/x/sa/y", Target: "spiffe://example.org/ns/ns3/sa/*", Paths: []string{"/a/*"}},
	}
	for _, g := range extra {
		if _, err := st.CreateGrant(ctx, "test", g); err != nil {
			t.Fatal(err)
		}
	}
	for _, target := range []string{"spiffe://example.org/ns/ns1/sa/svc-1-1", "spiffe://example.org/ns/other/sa/svc-3"} {
		if err := st.SetTargetMode(ctx, "test", target, authz.ModeAudit); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.SetPolicyLabels(ctx, map[string]map[string]string{
		"spiffe://example.org/ns/ns0/sa/svc-0-0": {"env": "from-git", "repo": "yes"},
		"spiffe://example.org/ns/other/sa/svc-9": {"tier": "2"},
	}); err != nil {
		t.Fatal(err)
	}
	s := &Service{cfg: Config{Authz: benchAuthzSource(t, st)}}

	check := func(t *testing.T) {
		t.Helper()
		for i, sy := range f.syncers(s) {
			msg := &agentv1.SyncResponse{}
			if err := sy.addAuthz(ctx, msg); err != nil {
				t.Fatal(err)
			}
			want := legacyAuthzData(t, st, f.served[i])
			if !bytes.Equal(marshal(t, want), marshal(t, msg.GetAuthz())) || !proto.Equal(want, msg.GetAuthz()) {
				t.Errorf("agent %d (%s): authorization data differs:\nwant %v\ngot  %v", i, f.agents[i], want, msg.GetAuthz())
			}
		}
	}
	t.Run("every agent receives what it received before", check)
	t.Run("after grants change, every agent still receives what it would have before", func(t *testing.T) {
		if _, err := st.DeleteGrant(ctx, "test", "g-ns"); err != nil {
			t.Fatal(err)
		}
		if _, err := st.CreateGrant(ctx, "test", authz.Grant{ID: "g-new", Caller: "spiffe://example.org/ns/x/sa/z", Target: "spiffe://example.org/ns/ns2/*"}); err != nil {
			t.Fatal(err)
		}
		if err := st.SetTargetMode(ctx, "test", "spiffe://example.org/ns/ns1/sa/svc-1-1", authz.ModeEnforce); err != nil {
			t.Fatal(err)
		}
		check(t)
	})
	t.Run("after a target's last grant goes and an entry's labels change, every agent still receives what it would have before", func(t *testing.T) {
		if _, err := st.DeleteGrant(ctx, "test", "g-deep"); err != nil {
			t.Fatal(err)
		}
		all, err := st.ListEntries(ctx, store.EntryFilter{})
		if err != nil {
			t.Fatal(err)
		}
		e := all[0]
		e.Labels = map[string]string{"env": "changed", "new": "label"}
		if _, err := st.UpdateEntry(ctx, "test", e); err != nil {
			t.Fatal(err)
		}
		check(t)
	})
	t.Run("after the repository replaces many grants, every agent still receives what it would have before", func(t *testing.T) {
		var gs []authz.Grant
		for i := range 1500 {
			gs = append(gs, authz.Grant{ID: fmt.Sprintf("git-%d", i), Caller: "spiffe://example.org/ns/x/sa/git",
				Target: fmt.Sprintf("spiffe://example.org/ns/ns%d/sa/svc-%d-%d", i%10, i%12, i%4), Source: "git:2"})
		}
		if err := st.ReplaceGrantsFromSource(ctx, "git", "git:", "git:test", gs); err != nil {
			t.Fatal(err)
		}
		check(t)
	})
	t.Run("a stream sends again only when its share changed", func(t *testing.T) {
		streams := f.syncers(s)
		for _, sy := range streams {
			if err := sy.addAuthz(ctx, &agentv1.SyncResponse{}); err != nil {
				t.Fatal(err)
			}
		}
		target := "spiffe://example.org/ns/ns3/sa/svc-3-2"
		if _, err := st.CreateGrant(ctx, "test", authz.Grant{Caller: "spiffe://example.org/ns/x/sa/w", Target: target}); err != nil {
			t.Fatal(err)
		}
		var got, want []string
		for i, sy := range streams {
			msg := &agentv1.SyncResponse{}
			if err := sy.addAuthz(ctx, msg); err != nil {
				t.Fatal(err)
			}
			if msg.Authz != nil {
				got = append(got, fmt.Sprint(i))
			}
			for _, id := range f.served[i] {
				if id == target {
					want = append(want, fmt.Sprint(i))
					break
				}
			}
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("streams that sent: %v, want %v", got, want)
		}
	})
}
