package policy_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/policybundle"
	"github.com/kithid/kith/internal/config"
	"github.com/kithid/kith/internal/policy"
	"github.com/kithid/kith/internal/store"
	"github.com/kithid/kith/internal/store/sqlite"
)

const (
	caller = "spiffe://example.org/ns/prod/sa/frontend"
	target = "spiffe://example.org/ns/prod/sa/payments"
	deny   = "package kith.ext\n\ndeny contains \"deletes are off\" if input.kith.method == \"DELETE\"\n"
	passes = "package kith.ext_test\n\ntest_true if true\n"
	fails  = "package kith.ext_test\n\ntest_false if false\n"
)

// quiet is an engine that logs nothing.
var quiet = authz.Config{Logger: slog.New(slog.DiscardHandler)}

func openStore(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "kith.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func writeDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, src := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// dirRevision is the revision a policy directory has always had: "dir:" and the first 12 hex digits of
// the SHA-256 of every .rego file's relative path and content, in path order.
func dirRevision(files map[string]string) string {
	h := sha256.New()
	var names []string
	for n := range files {
		if strings.HasSuffix(n, ".rego") {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		h.Write([]byte(n))
		h.Write([]byte(files[n]))
	}
	return "dir:" + hex.EncodeToString(h.Sum(nil))[:12]
}

// TestDir checks that policy.dir runs the checks `kith policy check` runs: compile, the directory's own
// tests, its data file and sample requests.
func TestDir(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		files map[string]string
		err   string // empty: the directory's modules are in force
	}{
		{"a policy whose tests pass is put in force", map[string]string{"ext.rego": deny, "ext_test.rego": passes, "sub/more.rego": "package kith.ext.sub\n\nx := 1\n"}, ""},
		{"a policy without tests is put in force", map[string]string{"ext.rego": deny}, ""},
		{"a failing test refuses the directory", map[string]string{"ext.rego": deny, "ext_test.rego": fails}, "1 of 1 policy tests failed"},
		{"a module that does not compile refuses the directory", map[string]string{"ext.rego": "package kith.ext\n\ndeny contains x if {\n"}, "ext.rego:"},
		{"a bad grant in the data file refuses the directory", map[string]string{"ext.rego": deny, "data.json": `{"grants": [{"caller": "nobody", "target": "` + target + `"}]}`}, "data.json: grants[0]"},
		{"a data file that does not parse refuses the directory", map[string]string{"ext.rego": deny, "data.yaml": "grants: [\n"}, "data.yaml"},
		{"a module in a reserved package refuses the directory", map[string]string{"ext.rego": "package kith.authz\n\nx := 1\n"}, "reserved for Kith"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeDir(t, tc.files)
			p, err := policy.New(ctx, policy.Config{Store: openStore(t), DataDir: t.TempDir(), Source: config.Policy{Dir: dir}, Engine: quiet})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "policy.dir "+dir) {
					t.Fatalf("error %v, want one naming policy.dir and containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rev, bundle := p.Policy()
			gotRev, modules, err := policybundle.ReadSigned(bundle, p.PolicyKey())
			if err != nil {
				t.Fatal(err)
			}
			wantModules := map[string]string{}
			for n, src := range tc.files {
				if strings.HasSuffix(n, ".rego") && !strings.HasSuffix(n, "_test.rego") {
					wantModules[n] = src
				}
			}
			if diff := cmp.Diff([]any{dirRevision(tc.files), dirRevision(tc.files), wantModules}, []any{rev, gotRev, modules}); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestSnapshot checks that the authorization data is read once per store revision and label change,
// and what an agent's share of it holds.
func TestSnapshot(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	td := spiffeid.RequireTrustDomainFromString("example.org")
	if _, err := st.CreateEntry(ctx, "test", store.Entry{
		SPIFFEID: spiffeid.RequireFromString(target), ParentID: spiffeid.RequireFromPath(td, "/kith/agent/join_token/a"),
		Selectors: []attestation.Selector{{Type: "unix", Key: "uid", Value: "1"}}, Labels: map[string]string{"env": "prod"},
	}); err != nil {
		t.Fatal(err)
	}
	for _, g := range []authz.Grant{
		{ID: "exact", Caller: caller, Target: target},
		{ID: "prefix", Caller: caller, Target: "spiffe://example.org/ns/prod/*"},
		{ID: "sibling", Caller: caller, Target: "spiffe://example.org/ns/production/*"},
		{ID: "other", Caller: caller, Target: "spiffe://example.org/ns/dev/sa/x"},
	} {
		if _, err := st.CreateGrant(ctx, "test", g); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.SetTargetMode(ctx, "test", target, authz.ModeAudit); err != nil {
		t.Fatal(err)
	}
	p, err := policy.New(ctx, policy.Config{Store: st, DataDir: t.TempDir(), Engine: quiet})
	if err != nil {
		t.Fatal(err)
	}
	first, err := p.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("an agent receives the grants of the IDs it serves and of their prefixes, their modes and every label", func(t *testing.T) {
		m := first.For(slices.Values([]string{target, target})).Message()
		var ids []string
		for _, g := range m.GetGrants() {
			ids = append(ids, g.GetId())
		}
		got := []any{ids, m.GetModes(), len(m.GetLabels()), m.GetLabels()[0].GetLabels()}
		want := []any{[]string{"prefix", "exact"}, map[string]string{target: "audit"}, 1, map[string]string{"env": "prod"}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
	t.Run("an agent serving nothing receives only labels", func(t *testing.T) {
		m := first.For(slices.Values([]string(nil))).Message()
		if len(m.GetGrants()) != 0 || len(m.GetModes()) != 0 || len(m.GetLabels()) != 1 {
			t.Errorf("message %v", m)
		}
	})
	t.Run("shares with the same message have the same sum, others another", func(t *testing.T) {
		a := first.For(slices.Values([]string{target}))
		b := first.For(slices.Values([]string{target, target}))
		c := first.For(slices.Values([]string{"spiffe://example.org/ns/prod/sa/other"}))
		if a.Sum() != b.Sum() || a.Sum() == c.Sum() {
			t.Errorf("sums %x %x %x", a.Sum(), b.Sum(), c.Sum())
		}
	})
	t.Run("the snapshot is shared until the store changes", func(t *testing.T) {
		again, err := p.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if again != first {
			t.Error("the snapshot was read again at the same revision")
		}
		if _, err := st.DeleteGrant(ctx, "test", "exact"); err != nil {
			t.Fatal(err)
		}
		next, err := p.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if next == first || next.Revision() <= first.Revision() || len(next.Data().Grants) != 3 {
			t.Errorf("after a change: revision %d (was %d), %d grants", next.Revision(), first.Revision(), len(next.Data().Grants))
		}
	})
	t.Run("kith can decides with the current data", func(t *testing.T) {
		d, err := p.Decide(ctx, authz.Input{Caller: spiffeid.RequireFromString(caller), Target: spiffeid.RequireFromString(target), Method: "GET", Path: "/"})
		if err != nil {
			t.Fatal(err)
		}
		if !d.Allowed || d.Grant != "prefix" || d.Mode != authz.ModeAudit {
			t.Errorf("decision %+v", d)
		}
	})
}

// TestPolicyStatusNamesTheSource checks the source line of `kith policy status`: a repository without a
// ref follows its HEAD, and says so (it printed "URL@" with nothing after the @).
func TestPolicyStatusNamesTheSource(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		src  config.Policy
		want string
	}{
		{"a repository without a ref follows its HEAD", config.Policy{Git: config.PolicyGit{URL: "https://example.org/p.git"}}, "https://example.org/p.git@HEAD"},
		{"a repository with a ref names it", config.Policy{Git: config.PolicyGit{URL: "https://example.org/p.git", Ref: "main"}}, "https://example.org/p.git@main"},
		{"no source: nothing", config.Policy{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := policy.New(ctx, policy.Config{Store: openStore(t), DataDir: t.TempDir(), Source: tc.src, Engine: quiet})
			if err != nil {
				t.Fatal(err)
			}
			st, err := p.PolicyStatus(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, st.GetSource()); diff != "" {
				t.Errorf("source (-want +got):\n%s", diff)
			}
		})
	}
}
