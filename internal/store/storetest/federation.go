package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/internal/store"
)

// Federated bundles and federation relationships: each change is one audited revision with a change of its
// kind; a relationship's first bundle is stored with it; refresh status is no change; entries keep the trust
// domains they federate with.
func testFederation(t *testing.T, h harness) {
	ctx := context.Background()
	s := h.new(t)
	partner := spiffeid.RequireTrustDomainFromString("partner.test")
	other := spiffeid.RequireTrustDomainFromString("other.test")
	tdComparer := cmp.Comparer(func(a, b spiffeid.TrustDomain) bool { return a == b })
	opts := cmp.Options{IDComparer, tdComparer}

	t.Run("a bundle set by hand is listed and is one audited change", func(t *testing.T) {
		before := mustRevision(t, s)
		b, err := s.PutBundle(ctx, "cli:uid=0", "bundle.set", store.FederatedBundle{
			TrustDomain: other, Bundle: []byte(`{"keys":[]}`), Source: store.BundleManual, Sequence: 7})
		if err != nil {
			t.Fatal(err)
		}
		if b.Revision != before+1 || b.UpdatedAt.IsZero() {
			t.Errorf("PutBundle = revision %d updated %v, want revision %d and a time", b.Revision, b.UpdatedAt, before+1)
		}
		got, err := s.ListBundles(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]store.FederatedBundle{b}, got, opts); diff != "" {
			t.Errorf("ListBundles (-want +got):\n%s", diff)
		}
		changes, err := s.ChangesSince(ctx, before)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]store.Change{{Revision: before + 1, Kind: store.KindBundle, ID: "other.test"}}, changes); diff != "" {
			t.Errorf("changes (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"bundle.set"}, auditActions(t, s, "other.test")); diff != "" {
			t.Errorf("audit (-want +got):\n%s", diff)
		}
	})

	var created store.Federation
	t.Run("a relationship is created with its first bundle in one revision", func(t *testing.T) {
		before := mustRevision(t, s)
		f := store.Federation{TrustDomain: partner, BundleEndpointURL: "https://127.0.0.1:8443", Profile: store.ProfileHTTPSSPIFFE,
			EndpointSPIFFEID: ID(t, "spiffe://partner.test/kith/server")}
		var err error
		created, err = s.PutFederation(ctx, "cli:uid=0", true, f, &store.FederatedBundle{TrustDomain: partner, Bundle: []byte(`{"keys":[]}`), Source: store.BundleFederation, Sequence: 1})
		if err != nil {
			t.Fatal(err)
		}
		if created.Revision != before+1 {
			t.Errorf("revision %d, want %d", created.Revision, before+1)
		}
		if _, err := s.PutFederation(ctx, "cli:uid=0", true, f, nil); !errors.Is(err, store.ErrAlreadyExists) {
			t.Errorf("second create: %v, want ErrAlreadyExists", err)
		}
		if _, err := s.PutFederation(ctx, "cli:uid=0", false, store.Federation{TrustDomain: other, BundleEndpointURL: "https://x", Profile: store.ProfileHTTPSWeb}, nil); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("update of none: %v, want ErrNotFound", err)
		}
		bs, err := s.ListBundles(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(bs) != 2 || bs[1].TrustDomain != partner || bs[1].Revision != before+1 {
			t.Errorf("bundles after create: %+v, want partner.test's at revision %d", bs, before+1)
		}
		if diff := cmp.Diff([]string{"federation.create", "bundle.set"}, auditActions(t, s, "partner.test")); diff != "" {
			t.Errorf("audit (-want +got):\n%s", diff)
		}
	})

	t.Run("refresh status is recorded without a revision", func(t *testing.T) {
		before := mustRevision(t, s)
		st := store.FederationStatus{LastRefresh: t0.Add(time.Minute), NextRefresh: t0.Add(2 * time.Minute), LastError: "endpoint down"}
		if err := s.SetFederationStatus(ctx, partner, st); err != nil {
			t.Fatal(err)
		}
		if after := mustRevision(t, s); after != before {
			t.Errorf("revision moved from %d to %d", before, after)
		}
		fs, err := s.ListFederations(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := created
		want.Status = st
		if diff := cmp.Diff([]store.Federation{want}, fs, opts); diff != "" {
			t.Errorf("ListFederations (-want +got):\n%s", diff)
		}
		if err := s.SetFederationStatus(ctx, other, st); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("status of no relationship: %v, want ErrNotFound", err)
		}
	})

	t.Run("an update keeps the creation time and starts the status over", func(t *testing.T) {
		f := created
		f.BundleEndpointURL = "https://127.0.0.1:9443"
		got, err := s.PutFederation(ctx, "cli:uid=0", false, f, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !got.CreatedAt.Equal(created.CreatedAt) || got.BundleEndpointURL != f.BundleEndpointURL || got.Status != (store.FederationStatus{}) {
			t.Errorf("updated = %+v", got)
		}
	})

	t.Run("deleting the relationship keeps its bundle; deleting the bundle is a deletion change", func(t *testing.T) {
		if _, err := s.DeleteFederation(ctx, "cli:uid=0", partner); err != nil {
			t.Fatal(err)
		}
		if _, err := s.DeleteFederation(ctx, "cli:uid=0", partner); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("second delete: %v, want ErrNotFound", err)
		}
		bs, _ := s.ListBundles(ctx)
		if len(bs) != 2 {
			t.Errorf("bundles after deleting the relationship: %d, want 2", len(bs))
		}
		before := mustRevision(t, s)
		old, err := s.DeleteBundle(ctx, "cli:uid=0", partner)
		if err != nil {
			t.Fatal(err)
		}
		if old.TrustDomain != partner {
			t.Errorf("deleted %v", old.TrustDomain)
		}
		changes, _ := s.ChangesSince(ctx, before)
		if diff := cmp.Diff([]store.Change{{Revision: before + 1, Kind: store.KindBundle, ID: "partner.test", Deleted: true}}, changes); diff != "" {
			t.Errorf("changes (-want +got):\n%s", diff)
		}
		if _, err := s.DeleteBundle(ctx, "cli:uid=0", partner); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("second delete: %v, want ErrNotFound", err)
		}
		MustVerify(t, s)
	})

	t.Run("an entry keeps the trust domains it federates with", func(t *testing.T) {
		e := Entry(t, 1)
		e.FederatesWith = []spiffeid.TrustDomain{other, partner}
		got, err := s.CreateEntry(ctx, "test", e)
		if err != nil {
			t.Fatal(err)
		}
		read, err := s.GetEntry(ctx, got.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(e.FederatesWith, read.FederatesWith, tdComparer); diff != "" {
			t.Errorf("FederatesWith (-want +got):\n%s", diff)
		}
		read.FederatesWith = nil
		if _, err := s.UpdateEntry(ctx, "test", read); err != nil {
			t.Fatal(err)
		}
		if again, _ := s.GetEntry(ctx, got.ID); len(again.FederatesWith) != 0 {
			t.Errorf("after clearing: %v", again.FederatesWith)
		}
	})
}
