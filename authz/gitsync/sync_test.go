package gitsync_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/gitsync"
	"github.com/kithid/kith/authz/gitsync/gitsynctest"
)

const goodPolicy = `package kith.ext

deny contains "deletes are off" if input.kith.method == "DELETE"
`

const goodTest = `package kith.ext_test

import data.kith.ext

test_delete_denied if {
	"deletes are off" in ext.deny with input as {"kith": {"method": "DELETE"}}
}
`

const failingTest = `package kith.ext_test

import data.kith.ext

test_get_denied if {
	"deletes are off" in ext.deny with input as {"kith": {"method": "GET"}}
}
`

func TestSync(t *testing.T) {
	ctx := context.Background()
	repo := gitsynctest.New(t)
	var applied []string
	var rejected []string
	s, err := gitsync.New(gitsync.Config{
		URL: repo.Dir, Ref: "main", Path: "policy",
		Apply: func(_ context.Context, c gitsync.Commit) error {
			applied = append(applied, c.SHA)
			return nil
		},
		Reject: func(_ context.Context, sha string, err error) { rejected = append(rejected, sha+": "+err.Error()) },
	})
	if err != nil {
		t.Fatal(err)
	}

	good := repo.Commit(map[string]string{"policy/ext.rego": goodPolicy, "policy/ext_test.rego": goodTest,
		"policy/data.json": `{"grants": [{"caller": "spiffe://example.org/a", "target": "spiffe://example.org/b", "methods": ["get"]}]}`})
	t.Run("a good commit is applied", func(t *testing.T) {
		sha, err := s.Sync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{good}, applied); diff != "" || sha != good {
			t.Errorf("applied (-want +got):\n%s", diff)
		}
	})
	t.Run("an unchanged ref is not applied again", func(t *testing.T) {
		if _, err := s.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if len(applied) != 1 {
			t.Errorf("applied %v", applied)
		}
	})
	t.Run("a failing test rejects the commit with file, line and test name", func(t *testing.T) {
		bad := repo.Commit(map[string]string{"policy/get_test.rego": failingTest})
		_, err := s.Sync(ctx)
		if err == nil {
			t.Fatal("no error")
		}
		want := "policy/get_test.rego:5: test data.kith.ext_test.test_get_denied failed"
		if !strings.Contains(err.Error(), "get_test.rego:5") || !strings.Contains(err.Error(), "test_get_denied failed") {
			t.Errorf("error %q, want it to contain %q", err, want)
		}
		if len(applied) != 1 || len(rejected) != 1 || !strings.HasPrefix(rejected[0], bad) {
			t.Errorf("applied %v rejected %v", applied, rejected)
		}
	})
	t.Run("a compile error rejects the commit with file and line", func(t *testing.T) {
		repo.Commit(map[string]string{"policy/get_test.rego": "", "policy/broken.rego": "package kith.ext\n\ndeny contains x if {\n  x := input.nope +\n}\n"})
		_, err := s.Sync(ctx)
		if err == nil || !strings.Contains(err.Error(), "broken.rego:") {
			t.Errorf("error %v, want one naming broken.rego", err)
		}
	})
	t.Run("a fix is applied", func(t *testing.T) {
		fix := repo.Commit(map[string]string{"policy/broken.rego": ""})
		if _, err := s.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if applied[len(applied)-1] != fix {
			t.Errorf("applied %v, want %s last", applied, fix)
		}
	})
	t.Run("a pinned commit sha is checked out", func(t *testing.T) {
		var got gitsync.Commit
		s2, _ := gitsync.New(gitsync.Config{URL: "file://" + repo.Dir, Ref: good, Path: "policy",
			Apply: func(_ context.Context, c gitsync.Commit) error { got = c; return nil }})
		if _, err := s2.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if got.SHA != good || len(got.Policy.Grants) != 1 || got.Policy.Grants[0].Methods[0] != "GET" {
			t.Errorf("got %+v", got)
		}
	})
	t.Run("an annotated tag is followed to its commit", func(t *testing.T) {
		repo.Git("tag", "-a", "-m", "release", "v1", good)
		var got gitsync.Commit
		s2, _ := gitsync.New(gitsync.Config{URL: repo.Dir, Ref: "v1", Path: "policy",
			Apply: func(_ context.Context, c gitsync.Commit) error { got = c; return nil }})
		if _, err := s2.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if got.SHA != good || len(got.Policy.Modules) != 1 {
			t.Errorf("got %+v, want commit %s", got, good)
		}
	})
	t.Run("files in hidden directories are not read, and a link out of the tree is refused", func(t *testing.T) {
		outside := filepath.Join(t.TempDir(), "outside.rego")
		if err := os.WriteFile(outside, []byte("package kith.ext\n\nallow := true\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, filepath.Join(repo.Dir, "policy", "link.rego")); err != nil {
			t.Fatal(err)
		}
		linked := repo.Commit(map[string]string{"policy/.hidden/x.rego": "package kith.ext\n\ndeny contains \"hidden\" if true\n",
			"policy/sub/ok.rego": "package kith.ext.sub\n\nx := 1\n"})
		var got gitsync.Commit
		s2, _ := gitsync.New(gitsync.Config{URL: repo.Dir, Ref: "main", Path: "./policy/",
			Apply: func(_ context.Context, c gitsync.Commit) error { got = c; return nil }})
		if _, err := s2.Sync(ctx); err == nil || !strings.Contains(err.Error(), "policy/link.rego is a symbolic link to "+outside+", outside the policy tree: refused") {
			t.Fatalf("Sync of %s with a link out of the tree: error %v, want it refused naming the link", linked, err)
		}
		if err := os.Remove(filepath.Join(repo.Dir, "policy", "link.rego")); err != nil {
			t.Fatal(err)
		}
		sha := repo.Commit(nil)
		if _, err := s2.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		var names []string
		for name := range got.Policy.Modules {
			names = append(names, name)
		}
		slices.Sort(names)
		if diff := cmp.Diff([]string{"ext.rego", "sub/ok.rego"}, names); diff != "" || got.SHA != sha {
			t.Errorf("modules (-want +got):\n%s", diff)
		}
	})
	t.Run("a module committed as executable is read like any other", func(t *testing.T) {
		repo.Commit(map[string]string{"policy/exec.rego": "package kith.ext\n\ndeny contains \"from an executable file\" if false\n"})
		repo.Git("update-index", "--chmod=+x", "policy/exec.rego")
		repo.Git("commit", "-m", "make it executable")
		if mode := repo.Git("ls-files", "-s", "policy/exec.rego"); !strings.HasPrefix(mode, "100755") {
			t.Fatalf("the file is not executable in the commit: %s", mode)
		}
		var got gitsync.Commit
		s2, _ := gitsync.New(gitsync.Config{URL: repo.Dir, Ref: "main", Path: "policy",
			Apply: func(_ context.Context, c gitsync.Commit) error { got = c; return nil }})
		if _, err := s2.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if _, ok := got.Policy.Modules["exec.rego"]; !ok {
			t.Errorf("modules %v: the executable exec.rego was left out", slices.Collect(maps.Keys(got.Policy.Modules)))
		}
	})
	t.Run("a missing policy path rejects the commit", func(t *testing.T) {
		s2, _ := gitsync.New(gitsync.Config{URL: repo.Dir, Ref: "main", Path: "nope",
			Apply: func(context.Context, gitsync.Commit) error { return nil }})
		if _, err := s2.Sync(ctx); err == nil || !strings.Contains(err.Error(), "read policy dir nope") {
			t.Errorf("error %v", err)
		}
	})
	t.Run("a missing ref is an error", func(t *testing.T) {
		s3, _ := gitsync.New(gitsync.Config{URL: repo.Dir, Ref: "nope",
			Apply: func(context.Context, gitsync.Commit) error { return nil }})
		if _, err := s3.Sync(ctx); err == nil || !strings.Contains(err.Error(), `ref "nope" not found`) {
			t.Errorf("error %v", err)
		}
	})
}

func TestCheck(t *testing.T) {
	ctx := context.Background()
	t.Run("a good directory passes", func(t *testing.T) {
		repo := gitsynctest.New(t)
		repo.Commit(map[string]string{"ext.rego": goodPolicy, "ext_test.rego": goodTest})
		if _, err := gitsync.Check(ctx, repo.Dir, authz.Config{}); err != nil {
			t.Error(err)
		}
	})
	t.Run("a directory with a failing test fails", func(t *testing.T) {
		repo := gitsynctest.New(t)
		repo.Commit(map[string]string{"ext.rego": goodPolicy, "get_test.rego": failingTest})
		if _, err := gitsync.Check(ctx, repo.Dir, authz.Config{}); err == nil || !strings.Contains(err.Error(), "get_test.rego:5") {
			t.Errorf("error %v", err)
		}
	})
	t.Run("a policy in a reserved package fails the sample requests", func(t *testing.T) {
		repo := gitsynctest.New(t)
		repo.Commit(map[string]string{"x.rego": "package kith.authz\n\nfoo := 1\n"})
		if _, err := gitsync.Check(ctx, repo.Dir, authz.Config{}); err == nil || !strings.Contains(err.Error(), "reserved for Kith") {
			t.Errorf("error %v", err)
		}
	})
	t.Run("an invalid static grant fails", func(t *testing.T) {
		repo := gitsynctest.New(t)
		repo.Commit(map[string]string{"data.yaml": "grants:\n  - caller: nope\n    target: spiffe://example.org/b\n"})
		if _, err := gitsync.Check(ctx, repo.Dir, authz.Config{}); err == nil || !strings.Contains(err.Error(), "grants[0]") {
			t.Errorf("error %v", err)
		}
	})
}

func TestVerifyWebhook(t *testing.T) {
	body := []byte(`{"ref":"refs/heads/main"}`)
	mac := hmac.New(sha256.New, []byte("s3cret"))
	mac.Write(body)
	good := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	for _, tc := range []struct {
		name   string
		header http.Header
		want   bool
	}{
		{"a correct github signature is accepted", http.Header{"X-Hub-Signature-256": {good}}, true},
		{"a wrong github signature is refused", http.Header{"X-Hub-Signature-256": {"sha256=" + strings.Repeat("0", 64)}}, false},
		{"a signature without its prefix is refused", http.Header{"X-Hub-Signature-256": {strings.TrimPrefix(good, "sha256=")}}, false},
		{"a correct gitlab token is accepted", http.Header{"X-Gitlab-Token": {"s3cret"}}, true},
		{"a wrong gitlab token is refused", http.Header{"X-Gitlab-Token": {"s3cre"}}, false},
		{"a request without either is refused", http.Header{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := gitsync.VerifyWebhook("s3cret", tc.header, body); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// A remote that accepts connections and never answers (a hung proxy, a black-holed port) ends a sync at
// Config.Timeout with an error that says so, reported to Reject with a live context, and does not hold the
// syncer: the next sync runs.
func TestSyncOfAHungRemoteTimesOut(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never read from or written to
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})

	type rejection struct {
		err    string
		ctxErr error
	}
	var rejected []rejection
	s, err := gitsync.New(gitsync.Config{
		URL: "http://" + l.Addr().String() + "/policy.git", Ref: "main", Timeout: 200 * time.Millisecond,
		Apply: func(context.Context, gitsync.Commit) error { return nil },
		Reject: func(ctx context.Context, _ string, err error) {
			rejected = append(rejected, rejection{err.Error(), ctx.Err()})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		done := make(chan error, 1)
		go func() { _, err := s.Sync(context.Background()); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "did not finish within policy.git.timeout 200ms") {
				t.Errorf("sync %d: error %v, want one naming policy.git.timeout", i+1, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("sync %d of a hung remote still running after 20s", i+1)
		}
	}
	if len(rejected) != 2 {
		t.Fatalf("Reject called %d times, want 2: %+v", len(rejected), rejected)
	}
	for _, r := range rejected {
		if r.ctxErr != nil || !strings.Contains(r.err, "policy.git.timeout") {
			t.Errorf("rejection %+v: want a live context and the timeout named", r)
		}
	}
}
