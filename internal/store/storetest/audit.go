package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/kithid/kith/internal/store"
)

func testAudit(t *testing.T, h harness) {
	ctx := context.Background()
	s := h.new(t)
	e, err := s.CreateEntry(ctx, "cli:uid=0", Entry(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Audit(ctx, "agent:spiffe://kith.test/x", "agent.attest.refused", "x", map[string]string{"why": "test"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Audit(ctx, "system", "note", "y", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateGrant(ctx, "cli:uid=1000", grantFor(1)); err != nil {
		t.Fatal(err)
	}
	evs, err := s.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("events are numbered from 1 and carry who, what, to what and the revision", func(t *testing.T) {
		type row struct {
			Seq                   int64
			Actor, Action, Target string
			Revision              int64
		}
		var got []row
		for _, ev := range evs {
			got = append(got, row{ev.Seq, ev.Actor, ev.Action, ev.Target, ev.Revision})
		}
		want := []row{
			{1, "cli:uid=0", "entry.create", e.ID, 1},
			{2, "agent:spiffe://kith.test/x", "agent.attest.refused", "x", 0},
			{3, "system", "note", "y", 0},
			{4, "cli:uid=1000", "grant.create", "g-1", 2},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("ListAudit (-want +got):\n%s", diff)
		}
		for i, ev := range evs {
			if ev.Time.IsZero() || (i > 0 && ev.Time.Before(evs[i-1].Time)) {
				t.Errorf("event %d time %v (previous %v)", ev.Seq, ev.Time, evs[max(i-1, 0)].Time)
			}
		}
	})

	t.Run("details are JSON objects; none is {}", func(t *testing.T) {
		for i, want := range map[int]map[string]any{1: {"why": "test"}, 2: {}} {
			var got map[string]any
			if err := json.Unmarshal([]byte(evs[i].Detail), &got); err != nil {
				t.Fatalf("event %d detail %q: %v", evs[i].Seq, evs[i].Detail, err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("event %d detail (-want +got):\n%s", evs[i].Seq, diff)
			}
		}
	})

	t.Run("each event's prev hash is the hash before it", func(t *testing.T) {
		seen := map[string]bool{}
		for i, ev := range evs {
			if len(ev.Hash) != sha256.Size || seen[string(ev.Hash)] {
				t.Errorf("event %d hash %x: want a fresh %d-byte hash", ev.Seq, ev.Hash, sha256.Size)
			}
			seen[string(ev.Hash)] = true
			if i > 0 && !bytes.Equal(ev.PrevHash, evs[i-1].Hash) {
				t.Errorf("event %d prev hash %x, want %x", ev.Seq, ev.PrevHash, evs[i-1].Hash)
			}
		}
	})

	t.Run("verify checks every row and reports the head", func(t *testing.T) {
		v := MustVerify(t, s)
		want := store.AuditVerification{Count: 4, OK: true, HeadHash: evs[3].Hash}
		if diff := cmp.Diff(want, v); diff != "" {
			t.Errorf("VerifyAudit (-want +got):\n%s", diff)
		}
	})

	t.Run("list pages by seq", func(t *testing.T) {
		page, err := s.ListAudit(ctx, store.AuditFilter{AfterSeq: 1, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(evs[1:3], page); diff != "" {
			t.Errorf("ListAudit(after 1, limit 2) (-want +got):\n%s", diff)
		}
		rest, err := s.ListAudit(ctx, store.AuditFilter{AfterSeq: 4})
		if err != nil {
			t.Fatal(err)
		}
		if len(rest) != 0 {
			t.Errorf("ListAudit(after 4) = %v, want none", rest)
		}
	})

	t.Run("newest first, the newest limit, and since a time", func(t *testing.T) {
		reversed := slices.Clone(evs)
		slices.Reverse(reversed)
		tests := []struct {
			name string
			f    store.AuditFilter
			want []store.AuditEvent
		}{
			{"newest first", store.AuditFilter{NewestFirst: true}, reversed},
			{"the newest two", store.AuditFilter{NewestFirst: true, Limit: 2}, reversed[:2]},
			{"newest first after seq 2", store.AuditFilter{NewestFirst: true, AfterSeq: 2}, reversed[:2]},
			{"newest first before seq 3 (the next page)", store.AuditFilter{NewestFirst: true, BeforeSeq: 3, Limit: 1}, reversed[2:3]},
			{"before seq 3", store.AuditFilter{BeforeSeq: 3}, evs[:2]},
			{"since the third event's time", store.AuditFilter{Since: evs[2].Time}, evs[2:]},
			{"since the third, newest first, limit 1", store.AuditFilter{Since: evs[2].Time, NewestFirst: true, Limit: 1}, reversed[:1]},
			{"since the second, limit 2", store.AuditFilter{Since: evs[1].Time, Limit: 2}, evs[1:3]},
			{"since after the last", store.AuditFilter{Since: evs[3].Time.Add(time.Second)}, nil},
		}
		for _, tt := range tests {
			got, err := s.ListAudit(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("%s (-want +got):\n%s", tt.name, diff)
			}
		}
	})
}

func testAuditTamper(t *testing.T, h harness) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		tamper   func(*testing.T, AuditTamperer)
		brokenAt int64
	}{
		{"an altered detail breaks the chain at that row", func(t *testing.T, a AuditTamperer) { a.AlterAuditDetail(t, 2, "{}") }, 2},
		{"a deleted row breaks the chain at the next row", func(t *testing.T, a AuditTamperer) { a.DeleteAuditRow(t, 2) }, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := h.new(t)
			tamperer, ok := s.(AuditTamperer)
			if !ok {
				t.Skip("the backend under test cannot alter its audit log (storetest.AuditTamperer)")
			}
			for i := range 4 {
				if _, err := s.CreateEntry(ctx, "test", Entry(t, i)); err != nil {
					t.Fatal(err)
				}
			}
			MustVerify(t, s)
			tc.tamper(t, tamperer)
			v, err := s.VerifyAudit(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if v.OK || v.BrokenAt != tc.brokenAt || v.Problem == "" {
				t.Errorf("VerifyAudit = OK %v, BrokenAt %d, Problem %q; want broken at %d with a problem", v.OK, v.BrokenAt, v.Problem, tc.brokenAt)
			}
		})
	}
}

// Concurrent Audit calls (minted SVIDs from many admin connections; a backend may group-commit them):
// every row lands once, in a chain that verifies, and a caller whose context ends does not take the rows of
// the others with it.
func testConcurrentAudits(t *testing.T, h harness) {
	s := h.new(t)
	ctx := context.Background()
	const callers, each = 16, 25
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	var wg sync.WaitGroup
	errs := make(chan error, callers*each)
	for c := range callers {
		wg.Go(func() {
			for i := range each {
				errs <- s.Audit(ctx, fmt.Sprintf("cli:uid=%d", c), "svid.mint.x509", fmt.Sprintf("spiffe://example.org/w/%d/%d", c, i), map[string]any{"i": i})
			}
		})
	}
	wg.Go(func() {
		for range each {
			_ = s.Audit(cancelled, "cli:uid=0", "svid.mint.jwt", "spiffe://example.org/cancelled", nil) // may or may not be written
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Audit: %v", err)
		}
	}
	events, err := s.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, ev := range events {
		if ev.Action == "svid.mint.x509" {
			seen[ev.Target]++
		}
	}
	if len(seen) != callers*each {
		t.Errorf("%d distinct rows, want %d", len(seen), callers*each)
	}
	for target, n := range seen {
		if n != 1 {
			t.Errorf("%s written %d times", target, n)
		}
	}
	if v, err := s.VerifyAudit(ctx); err != nil || !v.OK {
		t.Errorf("chain after grouped writes: %+v, %v", v, err)
	}
	if err := s.Audit(ctx, "a", "b", "c", func() {}); err == nil {
		t.Error("a detail that cannot be encoded was accepted")
	}
}
