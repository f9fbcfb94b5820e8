package sqlite

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/kithid/kith/internal/store"
)

// Concurrent Audit calls (minted SVIDs from many admin connections): every row lands once, in a chain
// that verifies, and a caller whose context ends does not take the rows of the others with it.
func TestConcurrentAudits(t *testing.T) {
	s, _ := openTemp(t)
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
