package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/catest"
	"github.com/kithid/kith/svid/cache"
)

// stateFixture is a cache with a bundle, entries and an SVID for each entry.
func stateFixture(t testing.TB, n int) (*ca.CA, *cache.Cache) {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	authority := catest.NewCA(t, td)
	c := cache.New()
	c.SetBundle(authority.Bundle())
	var entries []cache.Entry
	svids := map[string]*cache.SVID{}
	for i := range n {
		id := spiffeid.RequireFromPathf(td, "/w/%d", i)
		e := cache.Entry{ID: "e" + string(rune('a'+i)), SPIFFEID: id, Revision: int64(i + 1), X509TTL: time.Hour,
			Selectors: []attestation.Selector{{Type: "unix", Key: "uid", Value: "1000"}}, Labels: map[string]string{"env": "dev"}}
		entries = append(entries, e)
		key, chain := catest.IssueSVID(t, authority, id, 0)
		svid, err := cache.FromX509SVID(&x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key})
		if err != nil {
			t.Fatal(err)
		}
		svids[e.ID] = svid
	}
	c.ReplaceEntries(entries, int64(n))
	c.SetSVIDs(svids)
	return authority, c
}

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	_, c := stateFixture(t, 3)
	st, err := Header(spiffeid.RequireFromString("spiffe://example.org/kith/agent/join_token/n1"), nil, c)
	if err != nil {
		t.Fatal(err)
	}
	st.PolicyRevision = "abc"
	if err := Save(dir, st, c.Entries(), c.SVIDs()); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(statePath(dir))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", fi.Mode().Perm())
	}

	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != Version || got.PolicyRevision != "abc" || got.Revision != 3 {
		t.Errorf("header: version %d, policy revision %q, revision %d", got.Version, got.PolicyRevision, got.Revision)
	}
	restored := cache.New()
	n, err := got.Restore(spiffeid.RequireTrustDomainFromString("example.org"), restored, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("restored %d SVIDs, want 3", n)
	}
	if diff := cmp.Diff(c.Entries(), restored.Entries(), cmp.Comparer(func(a, b spiffeid.ID) bool { return a == b })); diff != "" {
		t.Errorf("entries (-saved +restored):\n%s", diff)
	}
	for id, s := range c.SVIDs() {
		r := restored.SVIDs()[id]
		if r == nil || !bytes.Equal(r.Leaf, s.Leaf) || !bytes.Equal(r.Key, s.Key) || !bytes.Equal(r.Intermediates, s.Intermediates) {
			t.Errorf("SVID of entry %s not restored as saved", id)
		}
	}
	if !restored.Bundle().Equal(c.Bundle()) {
		t.Error("bundle not restored")
	}

	// An SVID that expired while the agent was down is not served.
	none := cache.New()
	if n, _ := got.Restore(spiffeid.RequireTrustDomainFromString("example.org"), none, time.Now().Add(48*time.Hour)); n != 0 {
		t.Errorf("restored %d expired SVIDs", n)
	}
}

// A state file written by the first format (one JSON document, PEM) still restores.
func TestStateReadsVersion1(t *testing.T) {
	dir := t.TempDir()
	_, c := stateFixture(t, 2)
	v1 := map[string]any{"version": 1, "agent_id": "spiffe://example.org/kith/agent/join_token/n1", "revision": 7}
	var entries []entryRecord
	svids := map[string]SVIDRecord{}
	for _, e := range c.Entries() {
		entries = append(entries, toEntryRecord(e))
		s, err := c.SVIDs()[e.ID].X509SVID()
		if err != nil {
			t.Fatal(err)
		}
		if svids[e.ID], err = encodeSVID(s); err != nil {
			t.Fatal(err)
		}
	}
	v1["entries"], v1["svids"] = entries, svids
	data, err := json.Marshal(v1)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(statePath(dir), data, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	restored := cache.New()
	if n, err := st.Restore(spiffeid.RequireTrustDomainFromString("example.org"), restored, time.Now()); err != nil || n != 2 {
		t.Fatalf("restored %d SVIDs (%v), want 2", n, err)
	}
	if got := len(restored.Entries()); got != 2 || restored.Revision() != 7 {
		t.Errorf("restored %d entries at revision %d, want 2 at 7", got, restored.Revision())
	}
}

func TestStateRefusesCorruptAndNewerFiles(t *testing.T) {
	tests := []struct {
		name, content, want string
	}{
		{"empty", "", "is corrupt"},
		{"not json", "{{{", "is corrupt"},
		{"bad line", `{"version":2}` + "\n" + "garbage\n", "is corrupt"},
		{"newer", `{"version":99}`, "newer kith"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("loadState error = %v, want one containing %q", err, tt.want)
			}
			if corrupt := tt.want == "is corrupt"; errors.Is(err, ErrCorrupt) != corrupt {
				t.Errorf("errors.Is(%v, ErrCorrupt) = %v, want %v (kith dev moves a corrupt file aside)", err, !corrupt, corrupt)
			}
		})
	}
	if st, err := Load(t.TempDir()); st != nil || err != nil {
		t.Errorf("missing file: %v, %v; want nil, nil", st, err)
	}
}

// A state file damaged on disk is refused or partly restored, never a panic.
func FuzzLoadState(f *testing.F) {
	dir := f.TempDir()
	_, c := stateFixture(f, 2)
	st, err := Header(spiffeid.RequireFromString("spiffe://example.org/kith/agent/join_token/n1"), nil, c)
	if err != nil {
		f.Fatal(err)
	}
	if err := Save(dir, st, c.Entries(), c.SVIDs()); err != nil {
		f.Fatal(err)
	}
	good, err := os.ReadFile(statePath(dir))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"version":1,"entries":[{"id":"a","spiffe_id":"spiffe://example.org/a","selectors":["unix:uid:1"]}]}`))
	f.Add([]byte("{\"version\":2}\n{\"svid\":{\"entry_id\":\"a\",\"chain\":\"AAAA\",\"key\":\"AAAA\"}}\n"))
	td := spiffeid.RequireTrustDomainFromString("example.org")
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(statePath(dir), data, 0o600); err != nil {
			t.Fatal(err)
		}
		st, err := Load(dir)
		if err != nil {
			return
		}
		_, _ = st.Restore(td, cache.New(), time.Now())
	})
}
