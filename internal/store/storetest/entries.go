package storetest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/internal/store"
)

func testEntries(t *testing.T, h harness) {
	ctx := context.Background()
	s := h.new(t)

	in := store.Entry{
		SPIFFEID:      ID(t, "spiffe://kith.test/ns/prod/sa/payments"),
		NodeSelectors: []attestation.Selector{Selector("k8s_psat:cluster:prod")},
		Selectors:     []attestation.Selector{Selector("k8s:sa:payments"), Selector("k8s:ns:prod")},
		X509TTL:       time.Hour,
		JWTTTL:        5 * time.Minute,
		DNSNames:      []string{"payments.prod.svc"},
		Labels:        map[string]string{"team": "billing"},
	}
	created, err := s.CreateEntry(ctx, "cli:uid=0", in)
	if err != nil {
		t.Fatal(err)
	}
	if created.ID == "" || created.Revision != 1 || created.CreatedAt.IsZero() || !created.CreatedAt.Equal(created.UpdatedAt) {
		t.Fatalf("CreateEntry assigned ID %q, revision %d, times %v/%v", created.ID, created.Revision, created.CreatedAt, created.UpdatedAt)
	}
	want := in
	want.ID, want.Revision, want.CreatedAt, want.UpdatedAt, want.Source = created.ID, 1, created.CreatedAt, created.UpdatedAt, "cli"
	if diff := cmp.Diff(want, created, IDComparer); diff != "" {
		t.Errorf("CreateEntry returned (-want +got):\n%s", diff)
	}

	t.Run("get reads the entry back exactly", func(t *testing.T) {
		got, err := s.GetEntry(ctx, created.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(created, got, IDComparer); diff != "" {
			t.Errorf("GetEntry (-want +got):\n%s", diff)
		}
	})

	t.Run("source is kept, defaults to cli and filters lists", func(t *testing.T) {
		k := Entry(t, 8)
		k.Source = "k8s:kithidentity/all/shop/web-1"
		c, err := s.CreateEntry(ctx, "k8s", k)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetEntry(ctx, c.ID); err != nil || got.Source != k.Source {
			t.Fatalf("GetEntry: source %q, %v; want %q", got.Source, err, k.Source)
		}
		c.DNSNames = []string{"web-1.shop.svc"}
		if u, err := s.UpdateEntry(ctx, "k8s", c); err != nil || u.Source != k.Source {
			t.Fatalf("UpdateEntry: source %q, %v; want %q", u.Source, err, k.Source)
		}
		for _, tt := range []struct {
			prefix string
			want   []string
		}{
			{prefix: "k8s:", want: []string{c.ID}},
			{prefix: "k8s:kithidentity/all/", want: []string{c.ID}},
			{prefix: "k8s:kithidentity/other/"},
			{prefix: "cli", want: []string{created.ID}},
		} {
			got, err := s.ListEntries(ctx, store.EntryFilter{SourcePrefix: tt.prefix})
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, e := range got {
				ids = append(ids, e.ID)
			}
			if diff := cmp.Diff(tt.want, ids); diff != "" {
				t.Errorf("ListEntries(SourcePrefix %q) (-want +got):\n%s", tt.prefix, diff)
			}
		}
		if _, err := s.DeleteEntry(ctx, "k8s", c.ID); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("nil and empty slices and maps read back as they were written", func(t *testing.T) {
		e := Entry(t, 7)
		e.DNSNames = []string{}
		e.Labels = nil
		c, err := s.CreateEntry(ctx, "test", e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.GetEntry(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.DNSNames == nil || got.Labels != nil || got.NodeSelectors != nil {
			t.Errorf("GetEntry: DNSNames %#v, Labels %#v, NodeSelectors %#v; want empty, nil, nil", got.DNSNames, got.Labels, got.NodeSelectors)
		}
		if _, err := s.DeleteEntry(ctx, "test", c.ID); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a duplicate is refused naming the existing entry", func(t *testing.T) {
		dup := in
		dup.Selectors = []attestation.Selector{Selector("k8s:ns:prod"), Selector("k8s:sa:payments"), Selector("k8s:ns:prod")} // same set, other order
		dup.X509TTL = 0
		_, err := s.CreateEntry(ctx, "test", dup)
		if !errors.Is(err, store.ErrAlreadyExists) {
			t.Fatalf("CreateEntry error = %v, want ErrAlreadyExists", err)
		}
		if !strings.Contains(err.Error(), created.ID) {
			t.Errorf("error %q does not name the existing entry %s", err, created.ID)
		}
	})

	t.Run("a taken id is refused", func(t *testing.T) {
		e := Entry(t, 99)
		e.ID = created.ID
		if _, err := s.CreateEntry(ctx, "test", e); !errors.Is(err, store.ErrAlreadyExists) {
			t.Fatalf("CreateEntry error = %v, want ErrAlreadyExists", err)
		}
	})

	t.Run("update replaces fields and keeps the creation time", func(t *testing.T) {
		upd := created
		upd.Selectors = []attestation.Selector{Selector("k8s:sa:payments-v2")}
		upd.Labels = nil
		upd.CreatedAt = time.Time{} // ignored
		got, err := s.UpdateEntry(ctx, "test", upd)
		if err != nil {
			t.Fatal(err)
		}
		if !got.CreatedAt.Equal(created.CreatedAt) || !got.UpdatedAt.After(created.UpdatedAt) || got.Revision <= created.Revision {
			t.Errorf("UpdateEntry: created %v updated %v revision %d", got.CreatedAt, got.UpdatedAt, got.Revision)
		}
		read, err := s.GetEntry(ctx, created.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(got, read, IDComparer); diff != "" {
			t.Errorf("GetEntry after update (-want +got):\n%s", diff)
		}
		created = got
	})

	t.Run("update into a duplicate of another entry is refused", func(t *testing.T) {
		other, err := s.CreateEntry(ctx, "test", Entry(t, 1))
		if err != nil {
			t.Fatal(err)
		}
		upd := created
		upd.SPIFFEID, upd.ParentID, upd.NodeSelectors, upd.Selectors = other.SPIFFEID, other.ParentID, other.NodeSelectors, other.Selectors
		_, err = s.UpdateEntry(ctx, "test", upd)
		if !errors.Is(err, store.ErrAlreadyExists) || !strings.Contains(err.Error(), other.ID) {
			t.Fatalf("UpdateEntry error = %v, want ErrAlreadyExists naming %s", err, other.ID)
		}
	})

	t.Run("update of an unknown entry is not found", func(t *testing.T) {
		e := Entry(t, 2)
		e.ID = "nope"
		if _, err := s.UpdateEntry(ctx, "test", e); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("UpdateEntry error = %v, want ErrNotFound", err)
		}
	})

	t.Run("list filters and orders by spiffe id then id", func(t *testing.T) {
		all, err := s.ListEntries(ctx, store.EntryFilter{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range all {
			got = append(got, e.SPIFFEID.String())
		}
		wantIDs := []string{"spiffe://kith.test/ns/prod/sa/payments", "spiffe://kith.test/workload/1"}
		if diff := cmp.Diff(wantIDs, got); diff != "" {
			t.Errorf("ListEntries (-want +got):\n%s", diff)
		}
		byParent, err := s.ListEntries(ctx, store.EntryFilter{ParentID: ID(t, "spiffe://kith.test/kith/agent/join_token/node1")})
		if err != nil {
			t.Fatal(err)
		}
		if len(byParent) != 1 || byParent[0].SPIFFEID.String() != "spiffe://kith.test/workload/1" {
			t.Errorf("ListEntries by parent = %v", byParent)
		}
		bySPIFFE, err := s.ListEntries(ctx, store.EntryFilter{SPIFFEID: created.SPIFFEID})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]store.Entry{created}, bySPIFFE, IDComparer); diff != "" {
			t.Errorf("ListEntries by spiffe id (-want +got):\n%s", diff)
		}
	})

	t.Run("delete returns the entry and then it is gone", func(t *testing.T) {
		got, err := s.DeleteEntry(ctx, "test", created.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(created, got, IDComparer); diff != "" {
			t.Errorf("DeleteEntry (-want +got):\n%s", diff)
		}
		if _, err := s.GetEntry(ctx, created.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetEntry after delete error = %v, want ErrNotFound", err)
		}
		if _, err := s.DeleteEntry(ctx, "test", created.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("second DeleteEntry error = %v, want ErrNotFound", err)
		}
	})

	t.Run("audit records create, update and delete", func(t *testing.T) {
		evs, err := s.ListAudit(ctx, store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		var actions []string
		for _, ev := range evs {
			if ev.Target == created.ID {
				actions = append(actions, ev.Action)
			}
		}
		if diff := cmp.Diff([]string{"entry.create", "entry.update", "entry.delete"}, actions); diff != "" {
			t.Errorf("audit actions for %s (-want +got):\n%s", created.ID, diff)
		}
		MustVerify(t, s)
	})
}

func testCreateEntries(t *testing.T, h harness) {
	ctx := context.Background()

	t.Run("a batch is one revision with a change and an audit row per entry", func(t *testing.T) {
		s := h.new(t)
		var es []store.Entry
		for i := range 50 {
			es = append(es, Entry(t, i))
		}
		got, err := s.CreateEntries(ctx, "test", es)
		if err != nil {
			t.Fatal(err)
		}
		rev, err := s.Revision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rev != 1 {
			t.Errorf("Revision = %d, want 1", rev)
		}
		changes, err := s.ChangesSince(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		var want []store.Change
		for _, e := range got {
			if e.Revision != 1 || e.ID == "" {
				t.Errorf("entry %s: revision %d", e.ID, e.Revision)
			}
			want = append(want, store.Change{Revision: 1, Kind: store.KindEntry, ID: e.ID})
		}
		if diff := cmp.Diff(want, changes); diff != "" {
			t.Errorf("ChangesSince(0) (-want +got):\n%s", diff)
		}
		evs, err := s.ListAudit(ctx, store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 50 || evs[0].Action != "entry.create" || evs[49].Revision != 1 {
			t.Errorf("ListAudit: %d events, first %q", len(evs), evs[0].Action)
		}
		listed, err := s.ListEntries(ctx, store.EntryFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(listed) != 50 {
			t.Errorf("ListEntries returned %d entries, want 50", len(listed))
		}
		MustVerify(t, s)
	})

	t.Run("a duplicate inside the batch fails the whole batch", func(t *testing.T) {
		s := h.new(t)
		_, err := s.CreateEntries(ctx, "test", []store.Entry{Entry(t, 1), Entry(t, 2), Entry(t, 1)})
		if !errors.Is(err, store.ErrAlreadyExists) {
			t.Fatalf("CreateEntries error = %v, want ErrAlreadyExists", err)
		}
		listed, err := s.ListEntries(ctx, store.EntryFilter{})
		if err != nil {
			t.Fatal(err)
		}
		rev, _ := s.Revision(ctx)
		evs, _ := s.ListAudit(ctx, store.AuditFilter{})
		if len(listed) != 0 || rev != 0 || len(evs) != 0 {
			t.Errorf("after a failed batch: %d entries, revision %d, %d audit rows; want none", len(listed), rev, len(evs))
		}
	})
}
