package cache_test

import (
	"maps"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/svid/cache"
)

// A federated bundle reaches only the workloads whose entries federate with its trust domain, and a bundle
// the agent does not hold is not invented.
func TestFederatedBundlesOnlyForEntriesThatFederate(t *testing.T) {
	s := newSigner(t)
	c := cache.New()
	partner := spiffeid.RequireTrustDomainFromString("partner.test")
	other := spiffeid.RequireTrustDomainFromString("other.test")
	c.SetFederatedBundles(map[spiffeid.TrustDomain]*spiffebundle.Bundle{partner: spiffebundle.New(partner)})
	sel := func(uid string) attestation.Selector {
		return attestation.Selector{Type: "unix", Key: "uid", Value: uid}
	}
	fed := spiffeid.RequireFromPath(td, "/fed")
	c.ReplaceEntries([]cache.Entry{
		{ID: "fed", SPIFFEID: fed, Selectors: []attestation.Selector{sel("1")}, FederatesWith: []spiffeid.TrustDomain{partner, other}},
		{ID: "plain", SPIFFEID: web, Selectors: []attestation.Selector{sel("2")}},
	}, 1)
	svids := map[string]*cache.SVID{}
	for id, sid := range map[string]spiffeid.ID{"fed": fed, "plain": web} {
		key, chain := s.sign(sid)
		v, err := cache.NewSVID(sid, chain, key)
		if err != nil {
			t.Fatal(err)
		}
		svids[id] = v
	}
	c.SetSVIDs(svids)
	for _, tc := range []struct {
		name string
		uid  string
		want []string
	}{
		{"a workload whose entry federates gets the bundles the agent holds", "1", []string{"partner.test"}},
		{"a workload whose entry does not federate gets none", "2", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := c.Matching([]attestation.Selector{sel(tc.uid)})
			var got []string
			for td := range maps.Keys(u.Federated) {
				got = append(got, td.Name())
			}
			slices.Sort(got)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("federated bundles (-want +got):\n%s", diff)
			}
		})
	}
}
