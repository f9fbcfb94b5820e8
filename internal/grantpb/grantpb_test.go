package grantpb_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/internal/grantpb"
)

func TestRoundTrip(t *testing.T) {
	at := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	for _, g := range []grant.Grant{
		{ID: "g1", Caller: "spiffe://example.org/frontend", Target: "spiffe://example.org/payments", Methods: []string{"GET"},
			Paths: []string{"/api/*"}, Reason: "checkout", CreatedBy: "uid:1000", CreatedAt: at, ExpiresAt: at.Add(8 * time.Hour), Source: "cli"},
		{ID: "g2", Caller: "spiffe://example.org/team/*", Target: "spiffe://example.org/db"}, // no times, no methods
		{ID: "g3", Caller: "*", Target: "spiffe://example.org/db", PathRegex: []string{"/a.*"}, Headers: map[string]string{"x-a": "b"},
			Ports: []uint32{80}, NotMethods: []string{"GET"}, NotPaths: []string{"/x"}, NotCallers: []string{"spiffe://example.org/a"},
			Deny: true, Source: "istio:ns/p"},
	} {
		if diff := cmp.Diff(g, grantpb.FromProto(grantpb.ToProto(g))); diff != "" {
			t.Errorf("agent API round trip (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(g, grantpb.FromAdmin(grantpb.ToAdmin(g))); diff != "" {
			t.Errorf("admin API round trip (-want +got):\n%s", diff)
		}
	}
}
