//go:build e2e && oidc

package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

// The tests tagged oidc log users in through a real OpenID provider: the example provider of
// github.com/zitadel/oidc, built by scripts/components/oidc.sh (make test-oidc), with two users.

// oidcProvider starts the provider with scott (group payments-team) and ann (group kith-admins) and
// returns its issuer URL.
func oidcProvider(t *testing.T, dir string) string {
	t.Helper()
	bin := os.Getenv("KITH_OIDC_PROVIDER")
	if bin == "" {
		t.Fatal("KITH_OIDC_PROVIDER is not set: run make test-oidc, or set it to the binary scripts/components/oidc.sh builds (zitadel/oidc's example provider)")
	}
	// IDs equal user names: the example's device flow looks the user up by the name typed in its form.
	users := `{
  "scott": {"ID": "scott", "Username": "scott", "Password": "scott-pw", "FirstName": "Scott", "LastName": "S", "Email": "scott@example.com", "EmailVerified": true, "PreferredLanguage": "en"},
  "ann": {"ID": "ann", "Username": "ann", "Password": "ann-pw", "FirstName": "Ann", "LastName": "A", "Email": "ann@example.com", "EmailVerified": true, "PreferredLanguage": "en"}
}`
	groups := `{"scott": ["payments-team"], "ann": ["kith-admins"]}`
	for name, data := range map[string]string{"users.json": users, "groups.json": groups} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	addr := freeAddr(t)
	_, port, _ := strings.Cut(addr, ":")
	startCmd(t, "oidc provider", []string{"PORT=" + port, "USERS_FILE=" + filepath.Join(dir, "users.json"), "GROUPS_FILE=" + filepath.Join(dir, "groups.json")}, exec.Command(bin))
	issuer := "http://127.0.0.1:" + port + "/"
	eventually(t, 20*time.Second, "the OpenID provider's discovery document", func() error {
		resp, err := http.Get(issuer + ".well-known/openid-configuration")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	return issuer
}

// browser is the test acting as a person's browser at the provider.
type browser struct {
	t *testing.T
	c *http.Client
}

func newBrowser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, c: &http.Client{Jar: jar, Timeout: 20 * time.Second}}
}

func (b *browser) do(method, u string, form url.Values) string {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 400 {
		b.t.Fatalf("%s %s: %s\n%s", method, u, resp.Status, out)
	}
	return string(out)
}

// pending is a kith login running in the background, whose stderr tells where to log in.
type pending struct {
	cmd   *exec.Cmd
	lines chan string
	out   strings.Builder
}

func startLogin(t *testing.T, configDir string, args ...string) *pending {
	t.Helper()
	cmd := exec.Command(kithBin(t), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KITH_ADMIN_SOCKET=") && !strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "XDG_CONFIG_HOME="+configDir)
	p := &pending{cmd: cmd, lines: make(chan string, 100)}
	cmd.Stdout = &p.out
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	return p
}

// find waits for a stderr line matching re and returns its submatches.
func (p *pending) find(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	var seen []string
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				t.Fatalf("kith login ended without printing %s; it printed:\n%s", re, strings.Join(seen, "\n"))
			}
			seen = append(seen, l)
			if m := re.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-timeout:
			t.Fatalf("kith login printed no %s within 30s; it printed:\n%s", re, strings.Join(seen, "\n"))
		}
	}
}

func (p *pending) wait(t *testing.T) {
	t.Helper()
	if err, rest := p.end(t); err != nil {
		t.Fatalf("kith login: %v\nstdout:\n%s\nstderr:\n%s", err, p.out.String(), rest)
	}
}

// end reads the rest of stderr (all of it before Wait, which closes the pipe) and waits for the exit.
func (p *pending) end(t *testing.T) (error, string) {
	t.Helper()
	var rest []string
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				return p.cmd.Wait(), strings.Join(rest, "\n")
			}
			rest = append(rest, l)
		case <-timeout:
			t.Fatal("kith login did not finish within 60s")
		}
	}
}

var (
	deviceLine = regexp.MustCompile(`open (\S+) and enter the code (\S+)`)
	urlLine    = regexp.MustCompile(`^(http://\S+/auth\?\S+)$`)
	authReqID  = regexp.MustCompile(`name="id" value="([^"]+)"`)
)

func TestOIDCLoginDeviceAndBrowser(t *testing.T) {
	dir := shortTempDir(t)
	issuer := oidcProvider(t, dir)
	adminAddr := freeAddr(t)
	cfg := filepath.Join(dir, "server.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`admin:
  listen: %s
users:
  oidc:
    issuer: %s
    client_id: kith
    device_client_id: kith-device
    device_client_secret: kith-device-secret
    email_label: email
    group_labels: {payments-team: team=payments}
    group_roles: {kith-admins: admin}
`, adminAddr, issuer)), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newClusterWith(t, nil, "--config", cfg)
	c.startAgent("node1", c.joinToken("node1"))
	payments := spiffeid.RequireFromPath(c.td, "/payments")
	mustKith(t, c.adminSocket, "entry", "create", "--spiffe-id", payments.String(), "--parent", "spiffe://e2e.test/kith/agent/join_token/node1",
		"--selector", uidSelector(), "--label", "owner-team=payments")
	var info adminv1.CreateUserResponse
	kithProto(t, c.adminSocket, &info, "user", "add", "bootstrap", "--no-code")
	scottID, annID := spiffeid.RequireFromPath(c.td, "/user/scott"), spiffeid.RequireFromPath(c.td, "/user/ann")
	scottDir, annDir := filepath.Join(dir, "scott"), filepath.Join(dir, "ann")
	server := "https://" + adminAddr

	var loginToCall time.Duration
	t.Run("scott logs in with the device flow, the test acting as his browser", func(t *testing.T) {
		start := time.Now()
		p := startLogin(t, scottDir, "login", "--server", server, "--ca-fingerprint", info.GetCaFingerprint())
		m := p.find(t, deviceLine)
		b := newBrowser(t)
		b.do("POST", m[1], url.Values{"user_code": {m[2]}})
		confirm := b.do("POST", strings.TrimSuffix(issuer, "/")+"/device/login", url.Values{"user_code": {m[2]}, "username": {"scott"}, "password": {"scott-pw"}})
		if !strings.Contains(confirm, "kith-device") {
			t.Fatalf("the provider's confirm page does not name the client:\n%s", confirm)
		}
		b.do("GET", strings.TrimSuffix(issuer, "/")+"/device/confirm?action=allowed", nil)
		p.wait(t)
		out := mustKithUser(t, scottDir, nil, "whoami")
		loginToCall = time.Since(start)
		if !strings.Contains(out, scottID.String()) || !strings.Contains(out, "team=payments") || !strings.Contains(out, "email=scott@example.com") || !strings.Contains(out, "oidc") {
			t.Errorf("whoami after the device login:\n%s", out)
		}
		t.Logf("kith login (device flow, the test as the browser) → first authorized call (whoami over mTLS): %s", loginToCall.Round(time.Millisecond))
	})
	t.Run("ann logs in with authorization code + PKCE and a loopback redirect", func(t *testing.T) {
		p := startLogin(t, annDir, "login", "--server", server, "--ca-fingerprint", info.GetCaFingerprint(), "--flow", "browser")
		m := p.find(t, urlLine)
		b := newBrowser(t)
		form := b.do("GET", m[1], nil)
		id := authReqID.FindStringSubmatch(form)
		if id == nil {
			t.Fatalf("the provider's login form has no auth request id:\n%s", form)
		}
		done := b.do("POST", strings.TrimSuffix(issuer, "/")+"/login/username", url.Values{"id": {id[1]}, "username": {"ann"}, "password": {"ann-pw"}})
		if !strings.Contains(done, "Logged in to Kith") {
			t.Errorf("the loopback redirect answered:\n%s", done)
		}
		p.wait(t)
		out := mustKithUser(t, annDir, nil, "whoami")
		if !strings.Contains(out, annID.String()) || !strings.Contains(out, "admin") {
			t.Errorf("whoami after the browser login:\n%s", out)
		}
	})
	t.Run("claims decide: the admin group may list users, the payments team owns payments", func(t *testing.T) {
		if out := mustKithUser(t, annDir, nil, "user", "list"); !strings.Contains(out, "scott") {
			t.Errorf("ann's user list:\n%s", out)
		}
		r := kithUser(t, scottDir, nil, "user", "list")
		if r.code == 0 || !strings.Contains(r.stderr, "ListUsers is for users with role admin") {
			t.Errorf("scott's user list: exit %d stderr %q", r.code, r.stderr)
		}
		if ok, _ := authzAllowed(c.authzSocket("node1"), scottID, payments, "GET", "/"); ok {
			t.Fatal("scott may call payments before any grant")
		}
		mustKithUser(t, scottDir, nil, "grant", scottID.String(), payments.String(), "--for", "1h")
		eventually(t, 10*time.Second, "scott allowed", func() error {
			if ok, err := authzAllowed(c.authzSocket("node1"), scottID, payments, "GET", "/"); !ok {
				return fmt.Errorf("denied (%v)", err)
			}
			return nil
		})
		r = kithUser(t, annDir, nil, "grant", annID.String(), payments.String())
		if r.code != 0 {
			t.Errorf("ann (admin) could not grant: %s", r.stderr)
		}
	})
	t.Run("a disabled OIDC user cannot log in again", func(t *testing.T) {
		mustKith(t, c.adminSocket, "user", "disable", "scott")
		p := startLogin(t, filepath.Join(dir, "scott2"), "login", "--server", server, "--ca-fingerprint", info.GetCaFingerprint())
		m := p.find(t, deviceLine)
		b := newBrowser(t)
		b.do("POST", m[1], url.Values{"user_code": {m[2]}})
		b.do("POST", strings.TrimSuffix(issuer, "/")+"/device/login", url.Values{"user_code": {m[2]}, "username": {"scott"}, "password": {"scott-pw"}})
		b.do("GET", strings.TrimSuffix(issuer, "/")+"/device/confirm?action=allowed", nil)
		if err, rest := p.end(t); err == nil || !strings.Contains(rest, "user scott is disabled") {
			t.Errorf("a disabled user's login: %v\n%s", err, rest)
		}
	})
}
