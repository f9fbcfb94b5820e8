package cli

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.step.sm/crypto/pemutil"

	"github.com/kithid/kith/internal/config"
	"github.com/kithid/kith/internal/server"

	_ "modernc.org/sqlite"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// testServer is a real kith server on a temp data dir.
type testServer struct {
	dir    string
	socket string
	http   string
	stop   func()
}

func startServer(t *testing.T, dir string) *testServer {
	t.Helper()
	s, err := startServerWith(t, dir, nil)
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	return s
}

// startServerWith is startServer with the config changed by mod; it returns server.New's error.
func startServerWith(t *testing.T, dir string, mod func(*config.Server)) (*testServer, error) {
	t.Helper()
	cfg := &config.Server{DataDir: dir, TrustDomain: "example.org"}
	cfg.Listen.GRPC = "127.0.0.1:0"
	cfg.Listen.HTTP = "127.0.0.1:0"
	if mod != nil {
		mod(cfg)
	}
	if err := cfg.Finish(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, server.Config{Config: cfg})
	if err != nil {
		cancel()
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("server exited: %v", err)
	}
	ts := &testServer{dir: dir, socket: cfg.Listen.AdminSocket, http: "http://" + srv.HTTPAddr().String()}
	stopped := false
	ts.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server run: %v", err)
		}
	}
	t.Cleanup(ts.stop)
	return ts, nil
}

// kith runs the CLI against the server and returns stdout, stderr and the exit code.
func (s *testServer) kith(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	getenv := func(k string) string {
		if k == "KITH_ADMIN_SOCKET" {
			return s.socket
		}
		return ""
	}
	code := MainEnv(context.Background(), args, &out, &errb, getenv)
	return out.String(), errb.String(), code
}

// kithIn runs the CLI with stdin as its standard input.
func (s *testServer) kithIn(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	getenv := func(k string) string {
		if k == "KITH_ADMIN_SOCKET" {
			return s.socket
		}
		return ""
	}
	code := mainIn(context.Background(), args, strings.NewReader(stdin), &out, &errb, getenv)
	return out.String(), errb.String(), code
}

// ok runs the CLI and fails the test unless it exits 0.
func (s *testServer) ok(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code := s.kith(t, args...)
	if code != 0 {
		t.Fatalf("kith %s: exit %d: %s", strings.Join(args, " "), code, errs)
	}
	return out
}

func (s *testServer) bundle(t *testing.T) *spiffebundle.Bundle {
	t.Helper()
	b, err := spiffebundle.Parse(td, []byte(s.ok(t, "bundle", "show", "--format", "spiffe")))
	if err != nil {
		t.Fatalf("parse bundle: %v", err)
	}
	return b
}

func TestEntryLifecycle(t *testing.T) {
	s := startServer(t, t.TempDir())
	out := s.ok(t, "entry", "create", "-o", "json", "--spiffe-id", "spiffe://example.org/ns/prod/sa/web",
		"--node-selector", "join_token:name:node1", "--selector", "unix:uid:1000", "--selector", "unix:path:/usr/bin/web",
		"--ttl", "30m", "--dns-name", "web.prod.svc", "--label", "env=prod")
	var created struct {
		ID            string            `json:"id"`
		SPIFFEID      string            `json:"spiffe_id"`
		NodeSelectors []string          `json:"node_selectors"`
		Selectors     []string          `json:"selectors"`
		TTL           string            `json:"x509_ttl_seconds"`
		DNSNames      []string          `json:"dns_names"`
		Labels        map[string]string `json:"labels"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatalf("decode %q: %v", out, err)
	}
	want := struct {
		SPIFFEID      string
		NodeSelectors []string
		Selectors     []string
		TTL           string
		DNSNames      []string
		Labels        map[string]string
	}{"spiffe://example.org/ns/prod/sa/web", []string{"join_token:name:node1"}, []string{"unix:path:/usr/bin/web", "unix:uid:1000"}, "1800", []string{"web.prod.svc"}, map[string]string{"env": "prod"}}
	got := want
	got.SPIFFEID, got.NodeSelectors, got.Selectors, got.TTL, got.DNSNames, got.Labels = created.SPIFFEID, created.NodeSelectors, created.Selectors, created.TTL, created.DNSNames, created.Labels
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("created entry (-want +got):\n%s", diff)
	}

	t.Run("list shows the entry", func(t *testing.T) {
		if out := s.ok(t, "entry", "list"); !strings.Contains(out, created.ID) || !strings.Contains(out, "spiffe://example.org/ns/prod/sa/web") {
			t.Errorf("entry list = %q, want the entry", out)
		}
	})
	t.Run("update changes only the given flags", func(t *testing.T) {
		s.ok(t, "entry", "update", created.ID, "--label", "env=staging")
		out := s.ok(t, "entry", "show", created.ID)
		for _, want := range []string{"env=staging", "unix:uid:1000", "join_token:name:node1", "30m0s"} {
			if !strings.Contains(out, want) {
				t.Errorf("entry show = %q, want it to contain %q", out, want)
			}
		}
	})
	t.Run("a duplicate entry is refused", func(t *testing.T) {
		_, errs, code := s.kith(t, "entry", "create", "--spiffe-id", "spiffe://example.org/ns/prod/sa/web",
			"--node-selector", "join_token:name:node1", "--selector", "unix:uid:1000", "--selector", "unix:path:/usr/bin/web")
		if code == 0 || !strings.Contains(errs, "already exists") {
			t.Errorf("duplicate create: exit %d, stderr %q; want failure saying it already exists", code, errs)
		}
	})
	t.Run("delete removes it", func(t *testing.T) {
		s.ok(t, "entry", "delete", created.ID)
		_, errs, code := s.kith(t, "entry", "show", created.ID)
		if code == 0 || !strings.Contains(errs, "not found") {
			t.Errorf("show after delete: exit %d, stderr %q; want not found", code, errs)
		}
	})
}

func TestInvalidInputIsRejectedWithAClearError(t *testing.T) {
	s := startServer(t, t.TempDir())
	base := []string{"entry", "create", "--node-selector", "join_token:name:n1"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"a foreign trust domain", append(base, "--spiffe-id", "spiffe://other.org/web", "--selector", "unix:uid:1"), `trust domain "other.org"`},
		{"a path with dot segments", append(base, "--spiffe-id", "spiffe://example.org/a/../b", "--selector", "unix:uid:1"), "not a valid SPIFFE ID"},
		{"an empty path segment", append(base, "--spiffe-id", "spiffe://example.org/a//b", "--selector", "unix:uid:1"), "not a valid SPIFFE ID"},
		{"a missing spiffe id", append(base, "--selector", "unix:uid:1"), "spiffe_id is required"},
		{"an unknown selector type", append(base, "--spiffe-id", "spiffe://example.org/web", "--selector", "bogus:uid:1"), `unknown type "bogus"`},
		{"a malformed selector", append(base, "--spiffe-id", "spiffe://example.org/web", "--selector", "unix-uid"), "want type:key:value"},
		{"no selector", append(base, "--spiffe-id", "spiffe://example.org/web"), "at least one --selector"},
		{"a ttl above the maximum", append(base, "--spiffe-id", "spiffe://example.org/web", "--selector", "unix:uid:1", "--ttl", "48h"), "outside the allowed range"},
		{"a ttl below the minimum", append(base, "--spiffe-id", "spiffe://example.org/web", "--selector", "unix:uid:1", "--ttl", "5s"), "outside the allowed range"},
		{"the reserved agent path", append(base, "--spiffe-id", "spiffe://example.org/kith/agent/x", "--selector", "unix:uid:1"), "reserved path"},
		{"no parent or node selector", []string{"entry", "create", "--spiffe-id", "spiffe://example.org/web", "--selector", "unix:uid:1"}, "--parent"},
		{"a bad label", append(base, "--spiffe-id", "spiffe://example.org/web", "--selector", "unix:uid:1", "--label", "novalue"), "want key=value"},
		{"a bad dns name", append(base, "--spiffe-id", "spiffe://example.org/web", "--selector", "unix:uid:1", "--dns-name", "bad_name!"), "not a valid hostname"},
		{"a jwt without audience", []string{"svid", "mint", "jwt", "--spiffe-id", "spiffe://example.org/web"}, "--audience is required"},
		{"an x509 svid for another trust domain", []string{"svid", "mint", "x509", "--spiffe-id", "spiffe://evil.org/web", "--out-key", "-"}, `trust domain "evil.org"`},
		{"a bad output format", []string{"entry", "list", "-o", "yaml"}, "use table or json"},
		{"a token name with a slash", []string{"token", "create", "--name", "a/b"}, "token name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errs, code := s.kith(t, tt.args...)
			if code == 0 {
				t.Fatalf("exit 0 (stdout %q), want failure", out)
			}
			if !strings.Contains(errs, tt.want) {
				t.Errorf("stderr = %q, want it to contain %q", errs, tt.want)
			}
			if n := strings.Count(strings.TrimSpace(errs), "\n"); n != 0 {
				t.Errorf("stderr has %d lines, want one: %q", n+1, errs)
			}
		})
	}
}

func TestMintedSVIDsVerifyAgainstTheServedBundle(t *testing.T) {
	s := startServer(t, t.TempDir())
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid.key")
	s.ok(t, "svid", "mint", "x509", "--spiffe-id", "spiffe://example.org/app", "--ttl", "10m", "--out-cert", certFile, "--out-key", keyFile)
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %v (err %v), want 0600", fi.Mode().Perm(), err)
	}
	certPEM, _ := os.ReadFile(certFile)
	keyPEM, _ := os.ReadFile(keyFile)
	svid, err := x509svid.Parse(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("parse minted svid: %v", err)
	}
	if len(svid.Certificates) != 2 {
		t.Errorf("chain length = %d, want leaf + intermediate", len(svid.Certificates))
	}
	id, _, err := x509svid.Verify(svid.Certificates, s.bundle(t))
	if err != nil {
		t.Fatalf("x509svid.Verify: %v", err)
	}
	if id.String() != "spiffe://example.org/app" {
		t.Errorf("verified id = %s", id)
	}
	if ttl := svid.Certificates[0].NotAfter.Sub(svid.Certificates[0].NotBefore); ttl != 11*time.Minute {
		t.Errorf("lifetime = %s, want 10m + 1m backdate", ttl)
	}
	if out := s.ok(t, "svid", "verify", "--cert", certFile); !strings.Contains(out, "valid X.509-SVID for spiffe://example.org/app") {
		t.Errorf("svid verify = %q", out)
	}

	token := strings.TrimSpace(s.ok(t, "svid", "mint", "jwt", "--spiffe-id", "spiffe://example.org/app", "--audience", "orders"))
	jsvid, err := jwtsvid.ParseAndValidate(token, s.bundle(t), []string{"orders"})
	if err != nil {
		t.Fatalf("jwtsvid.ParseAndValidate with the served bundle: %v", err)
	}
	if jsvid.ID.String() != "spiffe://example.org/app" {
		t.Errorf("jwt sub = %s", jsvid.ID)
	}
	if ttl := time.Until(jsvid.Expiry); ttl > 5*time.Minute || ttl < 4*time.Minute {
		t.Errorf("jwt expires in %s, want the 5m default", ttl)
	}

	t.Run("the JWKS served over HTTP validates the same token", func(t *testing.T) {
		resp, err := http.Get(s.http + "/.well-known/jwks.json")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		jb, err := jwtbundle.Parse(td, body)
		if err != nil {
			t.Fatalf("parse jwks %s: %v", body, err)
		}
		if _, err := jwtsvid.ParseAndValidate(token, jb, []string{"orders"}); err != nil {
			t.Errorf("validate with served jwks: %v", err)
		}
		if _, err := jwtsvid.ParseAndValidate(token, jb, []string{"payments"}); err == nil {
			t.Error("token validated for the wrong audience")
		}
	})
	t.Run("the OIDC discovery document points at the JWKS", func(t *testing.T) {
		resp, err := http.Get(s.http + "/.well-known/openid-configuration")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var doc struct {
			JWKSURI string `json:"jwks_uri"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || !strings.HasSuffix(doc.JWKSURI, "/.well-known/jwks.json") {
			t.Errorf("openid configuration jwks_uri = %q (err %v)", doc.JWKSURI, err)
		}
	})
	t.Run("metrics count issued svids", func(t *testing.T) {
		resp, err := http.Get(s.http + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for _, want := range []string{`kith_svids_issued_total{type="x509"} 1`, `kith_svids_issued_total{type="jwt"} 1`, "kith_ca_expiry_seconds", "kith_store_revision", "kith_svid_issuance_seconds"} {
			if !strings.Contains(string(body), want) {
				t.Errorf("metrics lack %q", want)
			}
		}
	})
}

func TestCARotationKeepsOldSVIDsValid(t *testing.T) {
	s := startServer(t, t.TempDir())
	dir := t.TempDir()
	before := filepath.Join(dir, "before.pem")
	s.ok(t, "svid", "mint", "x509", "--spiffe-id", "spiffe://example.org/app", "--out-cert", before, "--out-key", before+".key")
	s.ok(t, "ca", "rotate")
	out := s.ok(t, "ca", "show")
	if strings.Count(out, "retired") < 1 || !strings.Contains(out, "active") {
		t.Errorf("ca show after rotate = %q, want an active and a retired authority", out)
	}
	after := filepath.Join(dir, "after.pem")
	s.ok(t, "svid", "mint", "x509", "--spiffe-id", "spiffe://example.org/app", "--out-cert", after, "--out-key", after+".key")
	for _, f := range []string{before, after} {
		if _, _, code := s.kith(t, "svid", "verify", "--cert", f); code != 0 {
			t.Errorf("svid from %s does not verify after rotation", filepath.Base(f))
		}
	}
	if a, b := chainIssuer(t, before), chainIssuer(t, after); a == b {
		t.Errorf("both SVIDs were signed by %s; want the rotation to switch intermediates", a)
	}
}

func chainIssuer(t *testing.T, file string) string {
	t.Helper()
	certs, err := pemutil.ReadCertificateBundle(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(certs[0].AuthorityKeyId)
}

func TestRestartKeepsCAEntriesAndAuditChain(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	s.ok(t, "entry", "create", "--spiffe-id", "spiffe://example.org/web", "--node-selector", "join_token:name:n1", "--selector", "unix:uid:1")
	s.ok(t, "token", "create", "--name", "n1")
	rootsBefore := s.ok(t, "bundle", "show")
	auditBefore := s.ok(t, "audit", "list", "-o", "json")
	s.stop()

	s = startServer(t, dir)
	if got := s.ok(t, "bundle", "show"); got != rootsBefore {
		t.Errorf("roots changed across restart")
	}
	if out := s.ok(t, "entry", "list"); !strings.Contains(out, "spiffe://example.org/web") {
		t.Errorf("entry lost across restart: %q", out)
	}
	if got := s.ok(t, "audit", "list", "-o", "json"); got != auditBefore {
		t.Errorf("audit log changed across restart:\nbefore %s\nafter %s", auditBefore, got)
	}
	if out := s.ok(t, "audit", "verify"); !strings.Contains(out, "intact") {
		t.Errorf("audit verify = %q", out)
	}
}

func TestTamperedAuditRowFailsVerify(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	s.ok(t, "token", "create", "--name", "n1")
	s.ok(t, "entry", "create", "--spiffe-id", "spiffe://example.org/web", "--node-selector", "join_token:name:n1", "--selector", "unix:uid:1")
	s.stop()

	db, err := sql.Open("sqlite", filepath.Join(dir, "kith.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"DROP TRIGGER audit_no_update",
		`UPDATE audit SET actor = 'someone-else' WHERE seq = 2`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	s = startServer(t, dir)
	out, errs, code := s.kith(t, "audit", "verify")
	if code != 1 || !strings.Contains(errs, "audit log broken at event 2") {
		t.Errorf("audit verify after tampering: exit %d, stdout %q, stderr %q; want exit 1 naming event 2", code, out, errs)
	}
}
