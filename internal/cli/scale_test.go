package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/internal/store"
	"github.com/kithid/kith/internal/store/sqlite"
)

// The sizes the CLI is tested at: with gRPC's 4 MiB receive limit and no paging, 20,000 entries broke
// `kith entry list` and every verb that resolves a short name, and 5,000 grants to one target broke
// `kith grants list` and `kith graph`.
const (
	scaleEntries       = 100_000
	scaleGrants        = 100_000
	scaleGrantsToOne   = 5_000
	scaleTarget        = "spiffe://example.org/svc/payments"
	scaleSeedGrantFrom = "git:seed"
)

// seedScale fills the store in dir (the server stopped) with scaleEntries entries, one of them payments,
// and scaleGrants grants, scaleGrantsToOne of them to payments, through the store in one transaction each.
func seedScale(t *testing.T, dir string) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(dir, "kith.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sel := []attestation.Selector{{Type: "unix", Key: "uid", Value: "1000"}}
	node := []attestation.Selector{{Type: "join_token", Key: "name", Value: "n1"}}
	es := make([]store.Entry, 0, scaleEntries)
	es = append(es, store.Entry{SPIFFEID: spiffeid.RequireFromString(scaleTarget), NodeSelectors: node, Selectors: sel})
	for i := 1; i < scaleEntries; i++ {
		es = append(es, store.Entry{SPIFFEID: spiffeid.RequireFromString(fmt.Sprintf("spiffe://example.org/svc/s%06d", i)), NodeSelectors: node, Selectors: sel})
	}
	if _, err := st.CreateEntries(ctx, "test", es); err != nil {
		t.Fatal(err)
	}
	gs := make([]grant.Grant, 0, scaleGrants)
	for i := range scaleGrants {
		g := grant.Grant{ID: fmt.Sprintf("g-seed-%06d", i), Caller: fmt.Sprintf("spiffe://example.org/svc/s%06d", 1+i%(scaleEntries-1)),
			Target: fmt.Sprintf("spiffe://example.org/svc/s%06d", 1+(i*7)%(scaleEntries-1)), Source: scaleSeedGrantFrom}
		if i < scaleGrantsToOne {
			g.Target = scaleTarget
		}
		gs = append(gs, g)
	}
	if err := st.ReplaceGrantsFromSource(ctx, "test", scaleSeedGrantFrom, scaleSeedGrantFrom, gs); err != nil {
		t.Fatal(err)
	}
}

// TestCLIAt100kEntriesAnd100kGrants lists, resolves short names and grants, checks and revokes with
// 100,000 entries and 100,000 grants (5,000 to one target) in the store.
// It takes 18 s on two idle cores, 106 s on two shared ones (most of it seeding): skipped with -short;
// make test runs it.
func TestCLIAt100kEntriesAnd100kGrants(t *testing.T) {
	if testing.Short() {
		t.Skip("100,000 entries and grants: 18 s to 2 min; run without -short (make test does)")
	}
	dir := t.TempDir()
	s := startServer(t, dir)
	s.stop()
	start := time.Now()
	seedScale(t, dir)
	t.Logf("seeded %d entries and %d grants in %s", scaleEntries, scaleGrants, time.Since(start).Round(time.Millisecond))
	s = startServer(t, dir)

	timed := func(t *testing.T, args ...string) string {
		t.Helper()
		start := time.Now()
		out := s.ok(t, args...)
		t.Logf("kith %s: %s, %d bytes of output", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), len(out))
		return out
	}
	count := func(t *testing.T, out, field string) int {
		t.Helper()
		var v map[string][]json.RawMessage
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("decode output: %v", err)
		}
		return len(v[field])
	}

	t.Run("entry list shows every entry", func(t *testing.T) {
		if got := count(t, timed(t, "entry", "list", "-o", "json"), "entries"); got != scaleEntries {
			t.Errorf("entry list: %d entries, want %d", got, scaleEntries)
		}
	})
	t.Run("grants list --target shows the grants to one target", func(t *testing.T) {
		if got := count(t, timed(t, "grants", "list", "--target", "payments", "-o", "json"), "grants"); got != scaleGrantsToOne {
			t.Errorf("grants list --target payments: %d grants, want %d", got, scaleGrantsToOne)
		}
	})
	t.Run("graph shows every grant", func(t *testing.T) {
		if got := count(t, timed(t, "graph", "-o", "json"), "edges"); got != scaleGrants {
			t.Errorf("graph -o json: %d edges, want %d", got, scaleGrants)
		}
	})
	t.Run("grant, can, who and revoke resolve short names", func(t *testing.T) {
		timed(t, "grant", "s099999", "payments", "--path", "/api/*")
		if out := timed(t, "can", "s099999", "payments", "--path", "/api/x"); !strings.Contains(out, "ALLOWED") {
			t.Errorf("can s099999 payments = %q, want ALLOWED", out)
		}
		who := timed(t, "who", "payments")
		if n := strings.Count(who, "\n  spiffe://"); n != scaleGrantsToOne+1 || !strings.Contains(who, "spiffe://example.org/svc/s099999") {
			t.Errorf("who payments: %d callers, want %d with s099999", n, scaleGrantsToOne+1)
		}
		if out := timed(t, "revoke", "s099999", "payments"); !strings.Contains(out, "revoked") {
			t.Errorf("revoke s099999 payments = %q", out)
		}
		if _, errs, code := s.kith(t, "can", "s099999", "payments", "--path", "/api/x"); code != 1 {
			t.Errorf("can after revoke: exit %d (%s), want 1 (denied)", code, errs)
		}
	})
}
