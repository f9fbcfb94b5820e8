package storetest

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/internal/store"
)

// testListPaging: entries and grants come back in pages by key, in list order, whatever the page size; a
// short name, a SPIFFE ID prefix and paging combine.
func testListPaging(t *testing.T, h harness) {
	ctx := context.Background()
	s := h.new(t)
	ids := []string{
		"spiffe://kith.test/ns/prod/sa/payments",
		"spiffe://kith.test/ns/dev/sa/payments",
		"spiffe://kith.test/payments",
		"spiffe://kith.test/ns/prod/sa/orders",
		"spiffe://kith.test/ns/prod/sa/xpayments",
		"spiffe://kith.test/ns/prodx/sa/orders",
		"spiffe://payments/x",
	}
	var es []store.Entry
	for i, id := range ids {
		if id == "spiffe://payments/x" {
			continue // another trust domain: stored only to show that "payments" does not reach into it
		}
		es = append(es, store.Entry{SPIFFEID: ID(t, id), ParentID: ID(t, "spiffe://kith.test/kith/agent/join_token/node1"),
			Selectors: []attestation.Selector{Selector(fmt.Sprintf("unix:uid:%d", i))}})
	}
	// A second entry with the same SPIFFE ID: pages must not split or repeat the two.
	es = append(es, store.Entry{SPIFFEID: ID(t, ids[0]), ParentID: ID(t, "spiffe://kith.test/kith/agent/join_token/node1"),
		Selectors: []attestation.Selector{Selector("unix:uid:99")}})
	es = append(es, store.Entry{SPIFFEID: ID(t, "spiffe://payments/x"), ParentID: ID(t, "spiffe://payments/kith/agent/join_token/node1"),
		Selectors: []attestation.Selector{Selector("unix:uid:98")}})
	if _, err := s.CreateEntries(ctx, "test", es); err != nil {
		t.Fatal(err)
	}
	all, err := s.ListEntries(ctx, store.EntryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	spiffeIDs := func(es []store.Entry) []string {
		out := []string{}
		for _, e := range es {
			out = append(out, e.SPIFFEID.String())
		}
		return out
	}
	pages := func(t *testing.T, f store.EntryFilter, size int) []store.Entry {
		t.Helper()
		out := []store.Entry{}
		f.Limit = size
		for range 100 {
			page, err := s.ListEntries(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) > size {
				t.Fatalf("ListEntries with Limit %d returned %d", size, len(page))
			}
			out = append(out, page...)
			if len(page) < size {
				return out
			}
			f.After = page[len(page)-1].Key()
		}
		t.Fatal("ListEntries paging did not end")
		return nil
	}

	t.Run("every page size yields the whole list in order", func(t *testing.T) {
		for _, size := range []int{1, 2, 3, len(all), len(all) + 1} {
			if diff := cmp.Diff(all, pages(t, store.EntryFilter{}, size), IDComparer); diff != "" {
				t.Errorf("pages of %d (-want +got):\n%s", size, diff)
			}
		}
	})

	for _, tc := range []struct {
		name string
		f    store.EntryFilter
		want []string
	}{
		{"a short name finds the IDs whose path ends in it", store.EntryFilter{Name: "payments"},
			[]string{"spiffe://kith.test/ns/dev/sa/payments", ids[0], ids[0], "spiffe://kith.test/payments"}},
		{"a short name of several segments", store.EntryFilter{Name: "prod/sa/payments"}, []string{ids[0], ids[0]}},
		{"a short name never matches part of a segment", store.EntryFilter{Name: "sa/orders"},
			[]string{"spiffe://kith.test/ns/prod/sa/orders", "spiffe://kith.test/ns/prodx/sa/orders"}},
		{"a short name never matches the trust domain", store.EntryFilter{Name: "payments/x"}, []string{}},
		{"a short name that nothing has", store.EntryFilter{Name: "nope"}, []string{}},
		{"a prefix keeps the IDs under it", store.EntryFilter{SPIFFEIDPrefix: "spiffe://kith.test/ns/prod/"},
			[]string{"spiffe://kith.test/ns/prod/sa/orders", ids[0], ids[0], "spiffe://kith.test/ns/prod/sa/xpayments"}},
		{"a prefix and a name together", store.EntryFilter{SPIFFEIDPrefix: "spiffe://kith.test/ns/", Name: "orders"},
			[]string{"spiffe://kith.test/ns/prod/sa/orders", "spiffe://kith.test/ns/prodx/sa/orders"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.ListEntries(ctx, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, spiffeIDs(got)); diff != "" {
				t.Errorf("ListEntries(%+v) (-want +got):\n%s", tc.f, diff)
			}
			if diff := cmp.Diff(got, pages(t, tc.f, 1), IDComparer); diff != "" {
				t.Errorf("pages of 1 (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("an updated SPIFFE ID is found by its new name only", func(t *testing.T) {
		e := all[0]
		e.SPIFFEID = ID(t, "spiffe://kith.test/renamed")
		if _, err := s.UpdateEntry(ctx, "test", e); err != nil {
			t.Fatal(err)
		}
		for name, want := range map[string]int{"renamed": 1} {
			got, err := s.ListEntries(ctx, store.EntryFilter{Name: name})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != want {
				t.Errorf("ListEntries(Name %q) = %v, want %d", name, spiffeIDs(got), want)
			}
		}
	})

	t.Run("grants page by target, caller and id", func(t *testing.T) {
		for i := range 7 {
			g := grant.Grant{ID: fmt.Sprintf("g-%d", i), Caller: frontend, Target: payments, Source: "cli"}
			if i%3 == 0 {
				g.Target = fmt.Sprintf("spiffe://kith.test/workload/%d", i)
			}
			if _, err := s.CreateGrant(ctx, "test", g); err != nil {
				t.Fatal(err)
			}
		}
		all, err := s.ListGrants(ctx, store.GrantFilter{})
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range []int{1, 2, 7, 8} {
			got := []grant.Grant{}
			f := store.GrantFilter{Limit: size}
			for range 100 {
				page, err := s.ListGrants(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, page...)
				if len(page) < size {
					break
				}
				f.After = store.GrantKeyOf(page[len(page)-1])
			}
			if diff := cmp.Diff(all, got); diff != "" {
				t.Errorf("pages of %d (-want +got):\n%s", size, diff)
			}
		}
	})
}
