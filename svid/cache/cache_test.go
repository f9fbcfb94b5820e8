package cache_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/svid/cache"
)

func TestAWorkloadThatReconnectsSharesTheViewUntilAChange(t *testing.T) {
	s := newSigner(t)
	c := cache.New()
	sel := attestation.Selector{Type: "unix", Key: "uid", Value: "1"}
	c.ReplaceEntries([]cache.Entry{{ID: "a", SPIFFEID: web, Selectors: []attestation.Selector{sel}}}, 1)
	key, chain := s.sign(web)
	svid, err := cache.NewSVID(web, chain, key)
	if err != nil {
		t.Fatal(err)
	}
	c.SetSVIDs(map[string]*cache.SVID{"a": svid})

	first := c.Subscribe([]attestation.Selector{sel})
	u1 := <-first.Updates()
	first.Finish()
	second := c.Subscribe([]attestation.Selector{sel})
	if u2 := <-second.Updates(); u2 != u1 {
		t.Error("a workload connecting again got a new view though nothing changed")
	}
	second.Finish()

	c.ApplyDelta([]cache.Entry{{ID: "b", SPIFFEID: spiffeid.RequireFromPath(td, "/other"), Selectors: []attestation.Selector{sel}}}, nil, 2)
	third := c.Subscribe([]attestation.Selector{sel})
	defer third.Finish()
	if u3 := <-third.Updates(); u3 == u1 || u3.Seq == u1.Seq {
		t.Error("after a change a reconnecting workload still got the old view")
	}
}

func TestUpdateMemoBuildsOnce(t *testing.T) {
	c := cache.New()
	sub := c.Subscribe(nil)
	defer sub.Finish()
	u := <-sub.Updates()
	builds := 0
	build := func() any { builds++; return builds }
	for range 3 {
		if v := u.Memo("k", build); v != 1 {
			t.Fatalf("Memo = %v, want 1", v)
		}
	}
	if v := u.Memo("other", build); v != 2 {
		t.Errorf("another key got %v, want its own build (2)", v)
	}
}

func TestEachMatchingEntryOnce(t *testing.T) {
	uid := attestation.Selector{Type: "unix", Key: "uid", Value: "1"}
	gid := attestation.Selector{Type: "unix", Key: "gid", Value: "2"}
	path := attestation.Selector{Type: "unix", Key: "path", Value: "/bin/app"}
	other := attestation.Selector{Type: "unix", Key: "uid", Value: "9"}
	entry := func(id string, sels ...attestation.Selector) cache.Entry {
		return cache.Entry{ID: id, SPIFFEID: spiffeid.RequireFromPath(td, "/"+id), Selectors: attestation.Normalize(sels)}
	}
	c := cache.New()
	c.ReplaceEntries([]cache.Entry{
		entry("both", uid, gid),
		entry("three", uid, gid, path),
		entry("uid", uid),
		entry("not-mine", uid, other),
	}, 1)
	var got []string
	for _, e := range c.MatchingEntries([]attestation.Selector{path, gid, uid, uid}) {
		got = append(got, e.ID)
	}
	if diff := cmp.Diff([]string{"both", "three", "uid"}, got); diff != "" {
		t.Errorf("matching entries (-want +got):\n%s", diff)
	}
}

// Views share the cache's entries: an entry changed later is a new entry, so an update already handed out
// still shows what it showed, and the next one shows the change.
func TestAViewKeepsTheEntriesItWasMadeWith(t *testing.T) {
	s := newSigner(t)
	c := cache.New()
	sel := attestation.Selector{Type: "unix", Key: "uid", Value: "1"}
	c.ReplaceEntries([]cache.Entry{{ID: "a", SPIFFEID: web, Selectors: []attestation.Selector{sel}, Labels: map[string]string{"hint": "old"}, Revision: 1}}, 1)
	key, chain := s.sign(web)
	svid, err := cache.NewSVID(web, chain, key)
	if err != nil {
		t.Fatal(err)
	}
	c.SetSVIDs(map[string]*cache.SVID{"a": svid})
	sub := c.Subscribe([]attestation.Selector{sel})
	defer sub.Finish()
	before := <-sub.Updates()

	c.ApplyDelta([]cache.Entry{{ID: "a", SPIFFEID: web, Selectors: []attestation.Selector{sel}, Labels: map[string]string{"hint": "new"}, Revision: 2}}, nil, 2)
	after := <-sub.Updates()

	hints := func(u *cache.Update) []string {
		var out []string
		for _, id := range u.Identities {
			out = append(out, id.Entry.Labels["hint"])
		}
		return out
	}
	if diff := cmp.Diff([]string{"old"}, hints(before)); diff != "" {
		t.Errorf("the earlier view changed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"new"}, hints(after)); diff != "" {
		t.Errorf("the new view (-want +got):\n%s", diff)
	}
	if e, _ := c.Entry("a"); e.Revision != 2 {
		t.Errorf("Entry(a).Revision = %d, want 2", e.Revision)
	}
}
