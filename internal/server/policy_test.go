package server

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/authz/gitsync/gitsynctest"
	"github.com/kithid/kith/authz/policybundle"
	"github.com/kithid/kith/internal/config"
	"github.com/kithid/kith/internal/store"
)

const (
	frontend = "spiffe://example.org/ns/prod/sa/frontend"
	payments = "spiffe://example.org/ns/prod/sa/payments"
	denyDel  = "package kith.ext\n\ndeny contains \"deletes are off\" if input.kith.method == \"DELETE\"\n"
	dataJSON = `{"grants": [{"caller": "` + frontend + `", "target": "` + payments + `", "methods": ["GET", "DELETE"], "reason": "from git"}]}`
)

func newPolicyServer(t *testing.T, repo string) *Server {
	t.Helper()
	dir := t.TempDir()
	c := &config.Server{DataDir: dir}
	c.Policy.Git.URL, c.Policy.Git.Ref, c.Policy.Git.WebhookSecret = repo, "main", "s3cret"
	if err := c.Finish(); err != nil {
		t.Fatal(err)
	}
	s, err := New(context.Background(), Config{Config: c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.store.Close() })
	return s
}

func can(t *testing.T, s *Server, method string) (bool, string) {
	t.Helper()
	r, err := s.Admin().Can(context.Background(), &adminv1.CanRequest{Caller: frontend, Target: payments, Method: method, Path: "/x"})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetAllowed(), r.GetPolicyRevision()
}

func TestPolicyFromGit(t *testing.T) {
	ctx := context.Background()
	repo := gitsynctest.New(t)
	first := repo.Commit(map[string]string{"ext.rego": denyDel, "data.json": dataJSON})
	s := newPolicyServer(t, repo.Dir)

	t.Run("a committed policy and its grants are enforced", func(t *testing.T) {
		if _, err := s.policy.SyncPolicy(ctx); err != nil {
			t.Fatal(err)
		}
		get, rev := can(t, s, "GET")
		del, _ := can(t, s, "DELETE")
		if diff := cmp.Diff([]any{true, false, first}, []any{get, del, rev}); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
	t.Run("git grants are listed with their source and cannot be revoked from the cli", func(t *testing.T) {
		l, err := s.Admin().ListGrants(ctx, &adminv1.ListGrantsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(l.GetGrants()) != 1 || l.GetGrants()[0].GetSource() != "git:"+first {
			t.Fatalf("grants %v", l.GetGrants())
		}
		_, err = s.Admin().RevokeGrants(ctx, &adminv1.RevokeGrantsRequest{Id: l.GetGrants()[0].GetId()})
		if err == nil || !strings.Contains(err.Error(), "change the repository") {
			t.Errorf("revoke error %v", err)
		}
	})
	t.Run("the active bundle is signed with the server key", func(t *testing.T) {
		rev, b := s.policy.Policy()
		got, _, err := policybundle.ReadSigned(b, s.policy.PolicyKey())
		if err != nil || got != rev {
			t.Errorf("verify: %v (revision %q)", err, got)
		}
	})
	var broken string
	t.Run("a broken commit is rejected with its error and the old policy still decides", func(t *testing.T) {
		broken = repo.Commit(map[string]string{"broken.rego": "package kith.ext\n\ndeny contains x if {\n"})
		if _, err := s.policy.SyncPolicy(ctx); err == nil {
			t.Fatal("no error")
		}
		if _, rev := can(t, s, "GET"); rev != first {
			t.Errorf("revision %s, want %s", rev, first)
		}
		st, err := s.Admin().GetPolicyStatus(ctx, &adminv1.GetPolicyStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		a := st.GetLastAttempt()
		if st.GetActiveRevision() != first || a.GetRevision() != broken || a.GetStatus() != "rejected" || !strings.Contains(a.GetError(), "broken.rego:") {
			t.Errorf("status %v", st)
		}
	})
	var fix string
	t.Run("a fix rolls out", func(t *testing.T) {
		fix = repo.Commit(map[string]string{"broken.rego": "", "ext.rego": strings.ReplaceAll(denyDel, "DELETE", "GET")})
		if _, err := s.policy.SyncPolicy(ctx); err != nil {
			t.Fatal(err)
		}
		get, rev := can(t, s, "GET")
		del, _ := can(t, s, "DELETE")
		if diff := cmp.Diff([]any{false, true, fix}, []any{get, del, rev}); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
	t.Run("rollback pins an earlier revision and unpin returns to the newest", func(t *testing.T) {
		if _, err := s.Admin().RollbackPolicy(ctx, &adminv1.RollbackPolicyRequest{Revision: first}); err != nil {
			t.Fatal(err)
		}
		if _, rev := can(t, s, "GET"); rev != first {
			t.Errorf("after rollback revision %s", rev)
		}
		if _, err := s.Admin().RollbackPolicy(ctx, &adminv1.RollbackPolicyRequest{Revision: broken}); err == nil {
			t.Error("rolled back to a rejected revision")
		}
		if _, err := s.Admin().UnpinPolicy(ctx, &adminv1.UnpinPolicyRequest{}); err != nil {
			t.Fatal(err)
		}
		if _, rev := can(t, s, "GET"); rev != fix {
			t.Errorf("after unpin revision %s", rev)
		}
	})
	t.Run("the rejection is counted", func(t *testing.T) {
		mfs, _ := s.metrics.reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "kith_policy_rejected_total" && mf.GetMetric()[0].GetCounter().GetValue() == 1 {
				return
			}
		}
		t.Error("kith_policy_rejected_total is not 1")
	})
	t.Run("a restarted server restores the active policy", func(t *testing.T) {
		c := s.cfg.Config
		s.store.Close()
		s2, err := New(ctx, Config{Config: c})
		if err != nil {
			t.Fatal(err)
		}
		defer s2.store.Close()
		if _, rev := can(t, s2, "GET"); rev != fix {
			t.Errorf("revision %s", rev)
		}
	})
}

func TestPolicyWebhook(t *testing.T) {
	repo := gitsynctest.New(t)
	repo.Commit(map[string]string{"ext.rego": denyDel})
	s := newPolicyServer(t, repo.Dir)
	h := s.httpHandler()
	body := []byte(`{"ref":"refs/heads/main"}`)
	mac := hmac.New(sha256.New, []byte("s3cret"))
	mac.Write(body)
	for _, tc := range []struct {
		name   string
		header map[string]string
		want   int
	}{
		{"a github signature is accepted", map[string]string{"X-Hub-Signature-256": "sha256=" + hex.EncodeToString(mac.Sum(nil))}, http.StatusAccepted},
		{"a gitlab token is accepted", map[string]string{"X-Gitlab-Token": "s3cret"}, http.StatusAccepted},
		{"a bad signature is refused", map[string]string{"X-Hub-Signature-256": "sha256=00"}, http.StatusUnauthorized},
		{"a missing signature is refused", nil, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/v1/policy/webhook", bytes.NewReader(body))
			for k, v := range tc.header {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Errorf("status %d, want %d", w.Code, tc.want)
			}
		})
	}
	t.Run("the signing key is private", func(t *testing.T) {
		fi, err := filepathStat(filepath.Join(s.cfg.Config.DataDir, "policy-signing-key.pem"))
		if err != nil || fi != 0o600 {
			t.Errorf("mode %v err %v", fi, err)
		}
	})
}

func filepathStat(p string) (uint32, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	return uint32(fi.Mode().Perm()), nil
}

// TestPolicyLabelsSurviveRestart checks that the identity labels of the repository's data file are kept
// in the store: a server restarted on the same data dir, with the repository gone, decides with them.
func TestPolicyLabelsSurviveRestart(t *testing.T) {
	ctx := context.Background()
	repo := gitsynctest.New(t)
	needsLabel := "package kith.ext\n\ndeny contains \"target has no team label\" if not input.kith.target.labels.team\n"
	data := `{"grants": [{"caller": "` + frontend + `", "target": "` + payments + `", "methods": ["GET"]}],
		"labels": {"` + payments + `": {"team": "payments"}}}`
	rev := repo.Commit(map[string]string{"ext.rego": needsLabel, "data.json": data})
	s := newPolicyServer(t, repo.Dir)
	if _, err := s.policy.SyncPolicy(ctx); err != nil {
		t.Fatal(err)
	}
	t.Run("the repository's labels decide", func(t *testing.T) {
		get, gotRev := can(t, s, "GET")
		if diff := cmp.Diff([]any{true, rev}, []any{get, gotRev}); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
	t.Run("after a restart without the repository the labels still decide", func(t *testing.T) {
		c := s.cfg.Config
		s.store.Close()
		if err := os.RemoveAll(repo.Dir); err != nil {
			t.Fatal(err)
		}
		s2, err := New(ctx, Config{Config: c})
		if err != nil {
			t.Fatal(err)
		}
		defer s2.store.Close()
		get, gotRev := can(t, s2, "GET")
		if diff := cmp.Diff([]any{true, rev}, []any{get, gotRev}); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
		r, err := s2.Admin().Can(ctx, &adminv1.CanRequest{Caller: frontend, Target: payments, Method: "GET", Path: "/x"})
		if err != nil {
			t.Fatal(err)
		}
		if !r.GetAllowed() {
			t.Errorf("denied: %v", r.GetReasons())
		}
	})
}

func TestPolicyRollbackByPrefixAndAudit(t *testing.T) {
	ctx := context.Background()
	repo := gitsynctest.New(t)
	first := repo.Commit(map[string]string{"ext.rego": denyDel, "data.json": dataJSON})
	s := newPolicyServer(t, repo.Dir)
	if _, err := s.policy.SyncPolicy(ctx); err != nil {
		t.Fatal(err)
	}
	second := repo.Commit(map[string]string{"ext.rego": strings.ReplaceAll(denyDel, "DELETE", "GET")})
	if _, err := s.policy.SyncPolicy(ctx); err != nil {
		t.Fatal(err)
	}
	actions := func(target string) []string {
		t.Helper()
		evs, err := s.store.ListAudit(ctx, store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, ev := range evs {
			if ev.Target == target {
				out = append(out, ev.Action)
			}
		}
		return out
	}

	t.Run("grant.sync is audited with the commit as target", func(t *testing.T) {
		got := map[string][]string{"git:": actions("git:"), "git:" + first: actions("git:" + first), "git:" + second: actions("git:" + second)}
		want := map[string][]string{"git:": nil, "git:" + first: {"grant.sync"}, "git:" + second: {"grant.sync"}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("grant.sync rows by target (-want +got):\n%s", diff)
		}
	})
	t.Run("unpin with nothing pinned writes no audit row", func(t *testing.T) {
		r, err := s.Admin().UnpinPolicy(ctx, &adminv1.UnpinPolicyRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]any{second, []string{"policy.activate"}}, []any{r.GetRevision(), actions(second)}); diff != "" {
			t.Errorf("unpin with nothing pinned (-want +got):\n%s", diff)
		}
	})
	for _, tc := range []struct {
		name, rev, wantErr string
	}{
		{name: "too short", rev: first[:3], wantErr: "too short"},
		{name: "unknown", rev: "0000000", wantErr: "not found"},
	} {
		t.Run("rollback refuses a revision "+tc.name, func(t *testing.T) {
			_, err := s.Admin().RollbackPolicy(ctx, &adminv1.RollbackPolicyRequest{Revision: tc.rev})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("RollbackPolicy(%s) error = %v, want one saying %q", tc.rev, err, tc.wantErr)
			}
		})
	}
	t.Run("rollback takes the short sha that git log --oneline shows", func(t *testing.T) {
		r, err := s.Admin().RollbackPolicy(ctx, &adminv1.RollbackPolicyRequest{Revision: first[:7]})
		if err != nil {
			t.Fatal(err)
		}
		if _, rev := can(t, s, "GET"); rev != first || r.GetRevision() != first {
			t.Errorf("rollback to %s answered %s, in force %s; want %s", first[:7], r.GetRevision(), rev, first)
		}
	})
	t.Run("unpin is audited once as policy.unpin", func(t *testing.T) {
		if _, err := s.Admin().UnpinPolicy(ctx, &adminv1.UnpinPolicyRequest{}); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"policy.activate", "policy.unpin"}, actions(second)); diff != "" {
			t.Errorf("audit actions for %s (-want +got):\n%s", second, diff)
		}
		if _, rev := can(t, s, "GET"); rev != second {
			t.Errorf("after unpin revision %s, want %s", rev, second)
		}
	})
}

func TestResolveRevisionAmbiguous(t *testing.T) {
	ctx := context.Background()
	repo := gitsynctest.New(t)
	s := newPolicyServer(t, repo.Dir)
	// Two recorded revisions that share a 4-character prefix.
	for _, rev := range []string{"abcd1111", "abcd2222"} {
		if err := s.store.RecordPolicy(ctx, "test", store.PolicyBundle{Revision: rev, Status: store.PolicyOK, Modules: map[string]string{"ext.rego": denyDel}}, false); err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.Admin().RollbackPolicy(ctx, &adminv1.RollbackPolicyRequest{Revision: "abcd"})
	if err == nil || !strings.Contains(err.Error(), "ambiguous") || !strings.Contains(err.Error(), "abcd1111, abcd2222") {
		t.Errorf("RollbackPolicy(abcd) error = %v, want ambiguous naming abcd1111, abcd2222", err)
	}
	r, err := s.Admin().RollbackPolicy(ctx, &adminv1.RollbackPolicyRequest{Revision: "abcd2"})
	if err != nil || r.GetRevision() != "abcd2222" {
		t.Errorf("RollbackPolicy(abcd2) = %v, %v; want abcd2222", r, err)
	}
}

func TestPolicyWebhookRefusesOversizedBodiesAndReplays(t *testing.T) {
	repo := gitsynctest.New(t)
	repo.Commit(map[string]string{"ext.rego": denyDel})
	h := newPolicyServer(t, repo.Dir).httpHandler()
	sign := func(body []byte) string {
		mac := hmac.New(sha256.New, []byte("s3cret"))
		mac.Write(body)
		return "sha256=" + hex.EncodeToString(mac.Sum(nil))
	}
	push := func(n int) []byte { return []byte(fmt.Sprintf(`{"ref":"refs/heads/main","after":"%040d"}`, n)) }
	big := bytes.Repeat([]byte("x"), 11<<20)
	for _, tc := range []struct {
		name      string
		body      []byte
		header    map[string]string
		chunked   bool // no Content-Length: the limit is found while reading
		want      int
		wantInMsg string
	}{
		{name: "a signed delivery is accepted", body: push(1),
			header: map[string]string{"X-Hub-Signature-256": sign(push(1)), "X-GitHub-Delivery": "d-1"}, want: http.StatusAccepted},
		{name: "the same delivery again is refused as a replay", body: push(1),
			header: map[string]string{"X-Hub-Signature-256": sign(push(1)), "X-GitHub-Delivery": "d-1"}, want: http.StatusConflict, wantInMsg: "already received"},
		{name: "the same body and signature under a new delivery ID is a replay too", body: push(1),
			header: map[string]string{"X-Hub-Signature-256": sign(push(1)), "X-GitHub-Delivery": "d-forged"}, want: http.StatusConflict, wantInMsg: "same body and signature"},
		{name: "a new body under a delivery ID seen is a replay", body: push(2),
			header: map[string]string{"X-Hub-Signature-256": sign(push(2)), "X-GitHub-Delivery": "d-1"}, want: http.StatusConflict, wantInMsg: "X-GitHub-Delivery d-1"},
		{name: "a gitlab delivery ID is remembered", body: push(3),
			header: map[string]string{"X-Gitlab-Token": "s3cret", "X-Gitlab-Event-UUID": "u-3"}, want: http.StatusAccepted},
		{name: "and its replay refused", body: push(4),
			header: map[string]string{"X-Gitlab-Token": "s3cret", "X-Gitlab-Event-UUID": "u-3"}, want: http.StatusConflict},
		{name: "a timestamp within the window is accepted", body: push(5),
			header: map[string]string{"X-Hub-Signature-256": sign(push(5)), "Webhook-Timestamp": fmt.Sprint(time.Now().Unix())}, want: http.StatusAccepted},
		{name: "a timestamp an hour old is refused", body: push(6),
			header: map[string]string{"X-Hub-Signature-256": sign(push(6)), "Webhook-Timestamp": fmt.Sprint(time.Now().Add(-time.Hour).Unix())}, want: http.StatusBadRequest, wantInMsg: "possible replay"},
		{name: "a replay with a wrong signature is refused as unsigned, not as a replay", body: push(1),
			header: map[string]string{"X-Hub-Signature-256": "sha256=00", "X-GitHub-Delivery": "d-1"}, want: http.StatusUnauthorized},
		{name: "a body over the limit signed only in its first 10 MiB is refused before the signature", body: big,
			header: map[string]string{"X-Hub-Signature-256": sign(big[:10<<20])}, want: http.StatusRequestEntityTooLarge},
		{name: "a body over the limit signed in full is refused", body: big[:2<<20],
			header: map[string]string{"X-Hub-Signature-256": sign(big[:2<<20])}, want: http.StatusRequestEntityTooLarge},
		{name: "a chunked body over the limit is refused", body: big[:2<<20], chunked: true,
			header: map[string]string{"X-Hub-Signature-256": sign(big[:2<<20])}, want: http.StatusRequestEntityTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/v1/policy/webhook", bytes.NewReader(tc.body))
			if tc.chunked {
				r.ContentLength = -1
			}
			for k, v := range tc.header {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.want || !strings.Contains(w.Body.String(), tc.wantInMsg) {
				t.Errorf("status %d %q, want %d containing %q", w.Code, w.Body.String(), tc.want, tc.wantInMsg)
			}
		})
	}
}

// A data file grant to or from another trust domain is refused, as `kith grant` refuses it: the commit is
// rejected naming the file, the grant and the trust domain, and no grant of it is stored.
func TestPolicyGitGrantOfAnotherTrustDomainIsRejected(t *testing.T) {
	ctx := context.Background()
	repo := gitsynctest.New(t)
	repo.Commit(map[string]string{"data.yaml": "grants:\n" +
		"  - {caller: " + frontend + ", target: " + payments + "}\n" +
		"  - {caller: spiffe://evil.org/ns/prod/sa/frontend, target: " + payments + "}\n" +
		"  - {caller: " + frontend + ", target: spiffe://examp1e.org/*}\n"})
	s := newPolicyServer(t, repo.Dir)
	_, err := s.policy.SyncPolicy(ctx)
	for _, want := range []string{
		"data.yaml: grants[1]: caller spiffe://evil.org/ns/prod/sa/frontend is not in this server's trust domain example.org",
		"data.yaml: grants[2]: target spiffe://examp1e.org/* is not in this server's trust domain example.org",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("SyncPolicy error = %v, want it to say %q", err, want)
		}
	}
	l, err := s.Admin().ListGrants(ctx, &adminv1.ListGrantsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.GetGrants()) != 0 {
		t.Errorf("grants stored from the rejected commit: %v", l.GetGrants())
	}
}
