package policy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/internal/store"
)

// grantList is a DataStore holding only grants, and no change feed.
type grantList []authz.Grant

func (l grantList) ListGrants(context.Context, store.GrantFilter) ([]authz.Grant, error) {
	return l, nil
}
func (l grantList) GetGrant(context.Context, string) (authz.Grant, error) {
	return authz.Grant{}, store.ErrNotFound
}
func (grantList) TargetModes(context.Context) (map[string]authz.Mode, error) { return nil, nil }
func (grantList) ListEntries(context.Context, store.EntryFilter) ([]store.Entry, error) {
	return nil, nil
}
func (grantList) ChangesSince(context.Context, int64) ([]store.Change, error) { return nil, nil }
func (grantList) ListUsers(context.Context) ([]store.User, error)             { return nil, nil }

// TestShareTargetsAreThoseCovering checks the target index against a scan with grant.Covers: a share
// holds exactly the targets that cover one of the served IDs, over random IDs and patterns (including odd ones such as a
// bare "*" or a "*" right after a name).
func TestShareTargetsAreThoseCovering(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	segs := []string{"ns", "prod", "dev", "devil", "sa", "x", "y"}
	randomID := func() string {
		n := 1 + r.IntN(4)
		p := make([]string, n)
		for i := range p {
			p[i] = segs[r.IntN(len(segs))]
		}
		return "spiffe://example.org/" + strings.Join(p, "/")
	}
	for round := range 200 {
		var grants []authz.Grant
		for i := range 30 {
			target := randomID()
			switch r.IntN(5) {
			case 0:
				target += "/*"
			case 1:
				target = target[:r.IntN(len(target)+1)] + "*"
			}
			grants = append(grants, authz.Grant{ID: fmt.Sprint(i), Caller: "spiffe://example.org/c", Target: target})
		}
		slices.SortFunc(grants, func(a, b authz.Grant) int { return strings.Compare(a.Target, b.Target) })
		s, err := readSnapshot(context.Background(), grantList(grants), "example.org", 1, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		served := make([]string, r.IntN(6))
		for i := range served {
			served[i] = randomID()
		}
		var want []string
		for _, g := range grants {
			for _, id := range served {
				if grant.Covers(g.Target, id) {
					want = append(want, g.Target)
					break
				}
			}
		}
		want = slices.Compact(want)
		got := s.For(slices.Values(served)).targets
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("round %d, served %v: targets (-want +got):\n%s", round, served, diff)
		}
	}
}
