package adminapi_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/internal/server/adminapi"
	"github.com/kithid/kith/internal/store"
)

// Every list pages: following next_page_token yields each item once, in order, whatever the page size;
// a page stays under MaxPageBytes however big its items; tokens are refused with another list or other
// filters.
func TestListsPage(t *testing.T) {
	h := newHarness(t, true)
	ctx := context.Background()
	const n = 23
	var es []store.Entry
	for i := range n {
		es = append(es, store.Entry{SPIFFEID: mustID(t, fmt.Sprintf("spiffe://kith.test/svc/s%02d", i)),
			ParentID: mustID(t, node1), Selectors: []attestation.Selector{{Type: "unix", Key: "uid", Value: fmt.Sprint(i)}}})
	}
	if _, err := h.st.CreateEntries(ctx, "test", es); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		g := grant.Grant{ID: fmt.Sprintf("g-%02d", i), Caller: web, Target: fmt.Sprintf("spiffe://kith.test/svc/s%02d", i%5), Source: "cli"}
		if i%2 == 0 {
			g.Target = payments
		}
		if _, err := h.st.CreateGrant(ctx, "test", g); err != nil {
			t.Fatal(err)
		}
	}

	entryPages := func(t *testing.T, req *adminv1.ListEntriesRequest) (ids []string, pages int) {
		t.Helper()
		for pages = 1; ; pages++ {
			resp, err := h.c.ListEntries(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range resp.GetEntries() {
				ids = append(ids, e.GetSpiffeId())
			}
			if resp.GetNextPageToken() == "" || pages > 100 {
				return ids, pages
			}
			req.PageToken = resp.GetNextPageToken()
		}
	}
	all, _ := entryPages(t, &adminv1.ListEntriesRequest{})
	if len(all) != n {
		t.Fatalf("ListEntries: %d entries, want %d", len(all), n)
	}
	for _, size := range []int32{1, 5, n, n + 1} {
		t.Run(fmt.Sprintf("entries in pages of %d", size), func(t *testing.T) {
			got, pages := entryPages(t, &adminv1.ListEntriesRequest{PageSize: size})
			if diff := cmp.Diff(all, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if want := (n + int(size) - 1) / int(size); pages != want {
				t.Errorf("%d pages, want %d", pages, want)
			}
		})
	}
	t.Run("grants to one target in pages of 2", func(t *testing.T) {
		var got []string
		req := &adminv1.ListGrantsRequest{Target: payments, PageSize: 2}
		for range 100 {
			resp, err := h.c.ListGrants(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			for _, g := range resp.GetGrants() {
				got = append(got, g.GetId())
			}
			if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
				break
			}
		}
		var want []string
		for i := 0; i < n; i += 2 {
			want = append(want, fmt.Sprintf("g-%02d", i))
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
	t.Run("a page of big entries stops at MaxPageBytes", func(t *testing.T) {
		big := func(i int) *adminv1.Entry {
			e := entry(func(e *adminv1.Entry) { e.SpiffeId = fmt.Sprintf("spiffe://kith.test/big/%d", i) })
			e.Selectors = nil
			for j := range adminapi.MaxSelectors {
				e.Selectors = append(e.Selectors, fmt.Sprintf("unix:path:/%d/%s", j, strings.Repeat("x", attestation.MaxValueLength-10)))
			}
			return e
		}
		for i := range 40 { // 40 × 64 KiB: more than MaxPageBytes
			if _, err := h.c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: big(i)}); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := h.c.ListEntries(ctx, &adminv1.ListEntriesRequest{SpiffeIdPrefix: "spiffe://kith.test/big/"})
		if err != nil {
			t.Fatal(err)
		}
		if got := len(resp.GetEntries()); got == 0 || got >= 40 || resp.GetNextPageToken() == "" {
			t.Errorf("first page: %d entries, next token %q; want fewer than 40 and a token", got, resp.GetNextPageToken())
		}
		got, _ := entryPages(t, &adminv1.ListEntriesRequest{SpiffeIdPrefix: "spiffe://kith.test/big/"})
		if len(got) != 40 {
			t.Errorf("all pages: %d entries, want 40", len(got))
		}
	})

	first, err := h.c.ListEntries(ctx, &adminv1.ListEntriesRequest{PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	token := first.GetNextPageToken()
	for _, tt := range []struct {
		name string
		call func() error
		want result
	}{
		{"a negative page size", func() error {
			_, err := h.c.ListEntries(ctx, &adminv1.ListEntriesRequest{PageSize: -1})
			return err
		}, result{codes.InvalidArgument, "page_size -1: must not be negative"}},
		{"a token that is not one", func() error {
			_, err := h.c.ListEntries(ctx, &adminv1.ListEntriesRequest{PageToken: "bm9wZQ"})
			return err
		}, result{codes.InvalidArgument, "page_token: not a next_page_token of ListEntries"}},
		{"a token of another list", func() error {
			_, err := h.c.ListAgents(ctx, &adminv1.ListAgentsRequest{PageToken: token})
			return err
		}, result{codes.InvalidArgument, "page_token: not a next_page_token of ListAgents"}},
		{"a token with other filters", func() error {
			_, err := h.c.ListEntries(ctx, &adminv1.ListEntriesRequest{ParentId: node1, PageToken: token})
			return err
		}, result{codes.InvalidArgument, "page_token was made for other filters"}},
		{"a name that is not whole segments", func() error {
			_, err := h.c.ListEntries(ctx, &adminv1.ListEntriesRequest{Name: "/payments"})
			return err
		}, result{codes.InvalidArgument, "give a short name of whole path segments"}},
		{"a prefix that is not of a SPIFFE ID", func() error {
			_, err := h.c.ListEntries(ctx, &adminv1.ListEntriesRequest{SpiffeIdPrefix: "kith.test/"})
			return err
		}, result{codes.InvalidArgument, "give the start of a SPIFFE ID"}},
	} {
		t.Run(tt.name+" is refused", func(t *testing.T) { check(t, tt.call(), tt.want) })
	}

	t.Run("a page size above the maximum gets the maximum", func(t *testing.T) {
		resp, err := h.c.ListEntries(ctx, &adminv1.ListEntriesRequest{PageSize: adminapi.MaxPageSize + 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetEntries()) == 0 {
			t.Errorf("no entries")
		}
	})
	t.Run("a short name finds its entries", func(t *testing.T) {
		resp, err := h.c.ListEntries(ctx, &adminv1.ListEntriesRequest{Name: "svc/s07"})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetEntries()) != 1 || resp.GetEntries()[0].GetSpiffeId() != "spiffe://kith.test/svc/s07" {
			t.Errorf("ListEntries(name svc/s07) = %v", resp.GetEntries())
		}
	})
}

func mustID(t *testing.T, s string) spiffeid.ID {
	t.Helper()
	id, err := spiffeid.FromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
