package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kithid/kith/authz/gitsync/gitsynctest"
	"github.com/kithid/kith/internal/config"
)

func TestPolicyCheck(t *testing.T) {
	write := func(t *testing.T, files map[string]string) string {
		dir := t.TempDir()
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	const policy = "package kith.ext\n\ndeny contains \"no deletes\" if input.kith.method == \"DELETE\"\n"
	const test = "package kith.ext_test\n\nimport data.kith.ext\n\ntest_delete if {\n\t\"no deletes\" in ext.deny with input as {\"kith\": {\"method\": \"GET\"}}\n}\n"
	for _, tc := range []struct {
		name     string
		files    map[string]string
		wantCode int
		want     string
	}{
		{"a good directory passes", map[string]string{"ext.rego": policy, "data.json": `{"grants": []}`}, 0, "ok: 1 modules, 0 test files, 0 grants"},
		{"a failing test fails with its file and line", map[string]string{"ext.rego": policy, "ext_test.rego": test}, 1, "ext_test.rego:5: test data.kith.ext_test.test_delete failed"},
		{"a compile error fails with its file and line", map[string]string{"ext.rego": "package kith.ext\n\ndeny contains x if {\n"}, 1, "ext.rego:"},
		{"a rule too costly for the evaluation budget fails, naming it", map[string]string{"ext.rego": policy, "slow.rego": "package kith.ext\n\ndeny contains \"never\" if {\n\tsome i in numbers.range(1, 100000)\n\tsome j in numbers.range(1, 100000)\n\ti * j == -1\n}\n"},
			1, "took longer than the 25ms evaluation budget (most of the time in rule data.kith.ext.deny, slow.rego:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Main(context.Background(), []string{"policy", "check", write(t, tc.files)}, &out, &errOut)
			if code != tc.wantCode || !strings.Contains(out.String()+errOut.String(), tc.want) {
				t.Errorf("exit %d, output %q %q; want exit %d containing %q", code, out.String(), errOut.String(), tc.wantCode, tc.want)
			}
		})
	}
}

// exampleRepo is a Git repository holding examples/policy-repo where a clone of Kith has it.
func exampleRepo(t *testing.T) string {
	t.Helper()
	repo := gitsynctest.New(t)
	files := map[string]string{}
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(filepath.Join(root, "examples", "policy-repo"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		files[filepath.ToSlash(rel)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	repo.Commit(files)
	return repo.Dir
}

func TestPolicyCheckWarnsOfUnreadDataFiles(t *testing.T) {
	example := filepath.Join("..", "..", "examples", "policy-repo")
	for _, tc := range []struct {
		name, dir, wantOut string
		wantWarn           []string
	}{
		{
			name: "the repository root: its data file is not read, and the warning names the path to use", dir: example,
			wantOut:  "ok: 1 modules, 1 test files, 0 grants",
			wantWarn: []string{"warning: policy/data.json is not read", "read only at the top of the policy path", "kith policy check policy", "policy.git.path: policy", "--policy-path policy"},
		},
		{name: "the policy path: both grants, no warning", dir: filepath.Join(example, "policy"), wantOut: "ok: 1 modules, 1 test files, 2 grants"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Main(context.Background(), []string{"policy", "check", tc.dir}, &out, &errOut)
			if code != 0 || !strings.Contains(out.String(), tc.wantOut) {
				t.Errorf("exit %d, stdout %q; want exit 0 and %q", code, out.String(), tc.wantOut)
			}
			for _, w := range tc.wantWarn {
				if !strings.Contains(errOut.String(), w) {
					t.Errorf("stderr %q does not say %q", errOut.String(), w)
				}
			}
			if len(tc.wantWarn) == 0 && errOut.Len() > 0 {
				t.Errorf("stderr %q, want none", errOut.String())
			}
		})
	}
}

// The try-it command of docs/policy-git.md, run from the root of a clone, loads the example's grants; so
// does the same with the path from KITH_POLICY_GIT_PATH, as the server reads it. The example's grants are
// in example.org: a server of another trust domain rejects them.
func TestDevLoadsGrantsOfThePolicyPath(t *testing.T) {
	repo := exampleRepo(t)
	for _, tc := range []struct {
		name string
		vars map[string]string
		args []string
	}{
		{name: "--policy-path", args: []string{"--trust-domain", "example.org", "--policy-repo", repo, "--policy-path", "examples/policy-repo/policy"}},
		{name: "KITH_POLICY_GIT_PATH", vars: map[string]string{"KITH_POLICY_GIT_PATH": "examples/policy-repo/policy"}, args: []string{"--trust-domain", "example.org", "--policy-repo", repo}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDevWith(t, tc.vars, tc.args...)
			var grants struct {
				Grants []struct {
					Caller, Target, Source string
				} `json:"grants"`
			}
			for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				out, errs, code := d.kith("grants", "list", "-o", "json")
				if code != 0 {
					t.Fatalf("grants list: exit %d: %s", code, errs)
				}
				if err := json.Unmarshal([]byte(out), &grants); err != nil {
					t.Fatalf("grants list -o json: %v\n%s", err, out)
				}
				if len(grants.Grants) > 0 || time.Now().After(deadline) {
					break
				}
			}
			var got []string
			for _, g := range grants.Grants {
				got = append(got, g.Caller+" -> "+g.Target)
			}
			sort.Strings(got)
			want := []string{
				"spiffe://example.org/ns/prod/sa/frontend -> spiffe://example.org/ns/prod/sa/payments",
				"spiffe://example.org/ns/prod/sa/payments -> spiffe://example.org/ns/prod/sa/ledger",
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("grants loaded from the example (-want +got):\n%s", diff)
			}
			if out, errs, code := d.kith("policy", "unpin"); code != 0 || !strings.Contains(out, "nothing pinned") {
				t.Errorf("policy unpin with nothing pinned = %d %q %q, want exit 0 saying nothing pinned", code, out, errs)
			}
		})
	}
}

func TestPolicyCheckVerboseAndCoverage(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"ext.rego": "package kith.ext\n\ndeny contains \"no deletes\" if input.kith.method == \"DELETE\"\n\ndeny contains \"no puts\" if input.kith.method == \"PUT\"\n",
		"ext_test.rego": "package kith.ext_test\n\nimport data.kith.ext\n\ntest_delete_denied if {\n\t\"no deletes\" in ext.deny with input as {\"kith\": {\"method\": \"DELETE\"}}\n}\n\n" +
			"test_get_denied if {\n\t\"no deletes\" in ext.deny with input as {\"kith\": {\"method\": \"GET\"}}\n}\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var out, errOut bytes.Buffer
	code := Main(context.Background(), []string{"policy", "check", "-v", "--coverage", dir}, &out, &errOut)
	got := out.String()
	for _, want := range []string{
		"ext_test.rego:5  data.kith.ext_test.test_delete_denied: PASS (",
		"ext_test.rego:9  data.kith.ext_test.test_get_denied: FAIL (",
		"PASS: 1/2",
		"ext.rego ", "coverage: ",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("policy check -v --coverage lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "ext_test.rego  ") && strings.Contains(got[strings.Index(got, "FILE"):], "ext_test.rego") {
		t.Errorf("the coverage table lists the test file:\n%s", got)
	}
	if code != 1 || !strings.Contains(errOut.String(), "1 of 2 policy tests failed") {
		t.Errorf("exit %d, stderr %q; want 1 and the failure", code, errOut.String())
	}
}

// kith can answers offline, with no server, from a policy directory or a data file: the same engine and
// the same explanation, and the same exit codes.
func TestCanOffline(t *testing.T) {
	dir := filepath.Join("..", "..", "examples", "policy-repo", "policy")
	const frontend, payments, ledger = "spiffe://example.org/ns/prod/sa/frontend", "spiffe://example.org/ns/prod/sa/payments", "spiffe://example.org/ns/prod/sa/ledger"
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{"a grant of the directory allows", []string{frontend, payments, "--path", "/api/orders", "--policy-dir", dir}, 0, "ALLOWED: " + frontend + " → " + payments + " GET /api/orders (mode enforce)"},
		{"a method the grant lacks is denied, with why", []string{frontend, payments, "--method", "DELETE", "--path", "/api/orders", "--policy-dir", dir}, 1, "does not allow method DELETE"},
		{"a data file alone", []string{payments, ledger, "--method", "POST", "--path", "/ledger.v1.Ledger/Write", "--data", filepath.Join(dir, "data.json")}, 0, "ALLOWED"},
		{"no grant in the data file", []string{ledger, payments, "--data", filepath.Join(dir, "data.json")}, 1, "no grant allows " + ledger},
		{"short names need a server", []string{"frontend", payments, "--data", filepath.Join(dir, "data.json")}, 2, `caller "frontend": offline, give a full SPIFFE ID`},
		{"a directory that does not check", []string{frontend, payments, "--policy-dir", filepath.Join(dir, "nope")}, 2, "--policy-dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			// No admin socket exists at its default path here: the answer cannot come from a server.
			code := MainEnv(context.Background(), append([]string{"can"}, tt.args...), &out, &errOut, func(k string) string {
				if k == "KITH_ADMIN_SOCKET" {
					return filepath.Join(t.TempDir(), "none.sock")
				}
				return ""
			})
			if code != tt.wantCode || !strings.Contains(out.String()+errOut.String(), tt.want) {
				t.Errorf("exit %d, %q %q; want exit %d and %q", code, out.String(), errOut.String(), tt.wantCode, tt.want)
			}
		})
	}
}

// An allow-all module outside the policy tree, linked into it, is refused alike by the three ways policy
// is loaded — kith policy check, policy.dir and Git sync — naming the link and its target. (kith policy
// check and policy.dir followed the link and loaded the module; Git sync skipped it.)
func TestAnOutsideModuleIsRefusedByEveryPolicyLoader(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "allow.rego")
	if err := os.WriteFile(outside, []byte("package kith.ext\n\n# allows every call\nallow := true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	repo := gitsynctest.New(t)
	repo.Commit(map[string]string{"policy/ext.rego": "package kith.ext\n\ndeny contains \"deletes are off\" if input.kith.method == \"DELETE\"\n"})
	if err := os.Symlink(outside, filepath.Join(repo.Dir, "policy", "allow.rego")); err != nil {
		t.Fatal(err)
	}
	repo.Commit(nil)
	want := "allow.rego is a symbolic link to " + outside + ", outside the policy tree: refused"

	t.Run("kith policy check", func(t *testing.T) {
		var out, errb bytes.Buffer
		code := MainEnv(context.Background(), []string{"policy", "check", filepath.Join(repo.Dir, "policy")}, &out, &errb, func(string) string { return "" })
		if code != 1 || !strings.Contains(errb.String(), want) {
			t.Errorf("kith policy check: exit %d, stderr %q; want exit 1 with %q", code, errb.String(), want)
		}
	})
	t.Run("policy.dir", func(t *testing.T) {
		_, err := startServerWith(t, t.TempDir(), func(c *config.Server) { c.Policy.Dir = filepath.Join(repo.Dir, "policy") })
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("kith server with policy.dir: %v, want %q", err, want)
		}
	})
	t.Run("policy.git", func(t *testing.T) {
		s, err := startServerWith(t, t.TempDir(), func(c *config.Server) { c.Policy.Git.URL, c.Policy.Git.Path = repo.Dir, "policy" })
		if err != nil {
			t.Fatal(err)
		}
		s.kith(t, "policy", "sync") // the server syncs at start too: the attempt is what status shows
		var status struct {
			Last struct{ Status, Error string } `json:"last_attempt"`
		}
		if err := json.Unmarshal([]byte(s.ok(t, "policy", "status", "-o", "json")), &status); err != nil {
			t.Fatal(err)
		}
		if status.Last.Status != "rejected" || !strings.Contains(status.Last.Error, "policy/"+want) {
			t.Errorf("policy status: last attempt %+v, want rejected with %q", status.Last, "policy/"+want)
		}
	})
}
