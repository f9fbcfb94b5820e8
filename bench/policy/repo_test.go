package main

import (
	"context"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/gitsync"
)

func TestPolicyRepo(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	ctx := context.Background()
	repo, first, err := newPolicyRepo(t.TempDir(), 8)
	if err != nil {
		t.Fatal(err)
	}
	// serial asks a decision engine holding the repository's policy for the header of a health check.
	serial := func(t *testing.T, target string) string {
		t.Helper()
		p, err := gitsync.Check(ctx, filepath.Join(repo.Dir, "policy"), authz.Config{})
		if err != nil {
			t.Fatalf("the generated policy does not pass its own checks: %v", err)
		}
		if len(p.Modules) != 9 || len(p.Tests) != 9 || len(p.Grants) != 8 {
			t.Fatalf("got %d modules, %d tests, %d grants; want 9, 9, 8", len(p.Modules), len(p.Tests), len(p.Grants))
		}
		e, err := authz.New(authz.Config{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.SetPolicy(ctx, "test", p.Modules); err != nil {
			t.Fatal(err)
		}
		d, err := e.Decide(ctx, authz.Input{Caller: spiffeid.RequireFromString(ProbeCaller), Target: spiffeid.RequireFromString(target),
			Method: "GET", Path: ProbePath})
		if err != nil {
			t.Fatal(err)
		}
		if !d.Allowed {
			t.Fatalf("health check of %s denied: %v", target, d.Reasons)
		}
		return d.Headers[SerialHeader]
	}
	if len(first) != 40 {
		t.Errorf("first commit %q is not a SHA", first)
	}
	t.Run("the generated policy passes its tests and starts at serial 0", func(t *testing.T) {
		if got := serial(t, serviceID(0)); got != "0" {
			t.Errorf("serial %q, want 0", got)
		}
	})
	t.Run("each commit sets its number in the next service module", func(t *testing.T) {
		for n := 1; n <= 9; n++ {
			sha, target, err := repo.bump(n)
			if err != nil {
				t.Fatal(err)
			}
			if sha == first || target != serviceID((n-1)%8) {
				t.Fatalf("commit %d: sha %s, target %s", n, sha, target)
			}
			if got := serial(t, target); got != strconv.Itoa(n) {
				t.Errorf("commit %d: serial %q", n, got)
			}
		}
		if got := serial(t, serviceID(2)); got != "3" {
			t.Errorf("an untouched module's serial changed: %q, want 3", got)
		}
	})
}
