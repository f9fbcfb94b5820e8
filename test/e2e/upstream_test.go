//go:build e2e && upstream

package e2e

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/ca/upstream/upstreamtest"
)

// fastRotation makes the server rotate its intermediate about every 40 s: a 1-minute intermediate
// (prepared at once, active after 40 s), 20-second SVIDs.
var fastRotation = []string{
	"KITH_CA_INTERMEDIATE_TTL=1m", "KITH_SVID_MAX_X509_TTL=30s", "KITH_SVID_X509_TTL=20s", "KITH_SVID_MIN_TTL=10s",
	"KITH_SVID_AGENT_TTL=30s", "KITH_CA_UPSTREAM_RETRY_MAX=2s",
}

// x509Watcher records every X.509 context the Workload API pushes.
type x509Watcher struct {
	mu      sync.Mutex
	updates []*workloadapi.X509Context
	errs    []error
}

func (w *x509Watcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.updates = append(w.updates, c)
}

func (w *x509Watcher) OnX509ContextWatchError(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errs = append(w.errs, err)
}

// TestUpstreamStepWorkloadSeesNoGap runs the server under a real step-ca, rotating its intermediate
// through it about every 40 s, while a workload watches the Workload API and polls it four times a
// second: every SVID it ever holds verifies with go-spiffe against step-ca's root alone, none has
// expired, and the intermediates change. Then step-ca is killed: `kith status` and `kith ca show` show
// the upstream error and the time left, the metric counts it, and the workload still gets SVIDs; after
// step-ca restarts the server recovers within the retry cap (2 s).
func TestUpstreamStepWorkloadSeesNoGap(t *testing.T) {
	s := upstreamtest.StartStepCA(t)
	env := append([]string{
		"KITH_CA_UPSTREAM_STEP_URL=" + s.URL, "KITH_CA_UPSTREAM_STEP_ROOT_FILE=" + s.RootFile,
		"KITH_CA_UPSTREAM_STEP_PROVISIONER=" + s.Provisioner, "KITH_CA_UPSTREAM_STEP_PASSWORD_FILE=" + s.PasswordFile,
	}, fastRotation...)
	c := newClusterEnv(t, env...)
	stepRoot := x509bundle.FromX509Authorities(c.td, []*x509.Certificate{s.Root})
	if got := serverBundle(t, c.adminSocket, c.td).X509Authorities(); len(got) != 1 || !got[0].Equal(s.Root) {
		t.Fatalf("server bundle has %d roots, want step-ca's root alone", len(got))
	}
	agent := c.startAgent("node1", c.joinToken("node1"))
	agent.waitOutput("kith agent started", 20*time.Second)
	socket := c.agentDirs("node1").socket
	wl := spiffeid.RequireFromPath(c.td, "/e2e/upstream")
	mustKith(t, c.adminSocket, "entry", "create", "--spiffe-id", wl.String(),
		"--node-selector", "join_token:name:node1", "--selector", uidSelector())
	waitSVID(t, socket, wl)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &x509Watcher{}
	watchDone := make(chan error, 1)
	go func() { watchDone <- workloadapi.WatchX509Context(ctx, w, workloadapi.WithAddr("unix://"+socket)) }()

	intermediates := map[string]bool{}
	check := func(phase string, until time.Time) {
		for time.Now().Before(until) {
			svid, _, err := fetchSVID(socket, wl)
			if err != nil {
				t.Fatalf("%s: workload api fetch failed: %v", phase, err)
			}
			if _, _, err := x509svid.Verify(svid.Certificates, stepRoot); err != nil {
				t.Fatalf("%s: the workload's svid does not verify to step-ca's root: %v", phase, err)
			}
			intermediates[svid.Certificates[1].SerialNumber.String()] = true
			time.Sleep(250 * time.Millisecond)
		}
	}
	check("upstream up", time.Now().Add(100*time.Second))
	if len(intermediates) < 3 {
		t.Errorf("the workload saw %d intermediates in 100 s, want at least 3 (rotations through step-ca)", len(intermediates))
	}

	// step-ca down: the server keeps its intermediate, says so, and the workload keeps its SVIDs.
	s.Stop()
	eventually(t, 60*time.Second, "kith status reporting the step-ca failure", func() error {
		out := mustKith(t, c.adminSocket, "status")
		if !strings.Contains(out, "Upstream failing") || !strings.Contains(out, "connection refused") {
			return fmt.Errorf("kith status:\n%s", out)
		}
		return nil
	})
	show := mustKith(t, c.adminSocket, "ca", "show")
	for _, want := range []string{"CA upstream:      step " + s.URL, "left)", "Upstream errors:", "connection refused"} {
		if !strings.Contains(show, want) {
			t.Errorf("kith ca show lacks %q:\n%s", want, show)
		}
	}
	if m := metrics(t, c.httpAddr); !strings.Contains(m, "kith_ca_upstream_errors_total ") || strings.Contains(m, "kith_ca_upstream_errors_total 0\n") {
		t.Errorf("metrics do not count the upstream errors:\n%s", grepLines(m, "kith_ca_upstream"))
	}
	check("upstream down", time.Now().Add(10*time.Second))

	s.Start()
	back := time.Now()
	eventually(t, 10*time.Second, "kith status reporting step-ca ok again", func() error {
		out := mustKith(t, c.adminSocket, "status")
		if !strings.Contains(out, "Upstream ok:") {
			return fmt.Errorf("kith status:\n%s", out)
		}
		return nil
	})
	t.Logf("the server called step-ca successfully %s after it was back (retry cap 2s)", time.Since(back).Round(100*time.Millisecond))
	check("upstream back", time.Now().Add(50*time.Second))

	cancel()
	<-watchDone
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, err := range w.errs {
		if status.Code(err) != codes.Canceled { // the test's own cancel at the end
			t.Errorf("the Workload API watch reported an error: %v", err)
		}
	}
	for i, u := range w.updates {
		for _, svid := range u.SVIDs {
			// Just before the leaf expires: it is capped at the intermediate, whose start step-ca does not backdate.
			at := svid.Certificates[0].NotAfter.Add(-time.Second)
			if _, _, err := x509svid.Verify(svid.Certificates, stepRoot, x509svid.WithTime(at)); err != nil {
				t.Errorf("update %d: svid %s does not verify to step-ca's root: %v", i, svid.ID, err)
			}
		}
	}
	if len(w.updates) < 4 {
		t.Errorf("%d Workload API updates while the intermediate rotated, want several", len(w.updates))
	}
}

// metrics returns the server's /metrics text.
func metrics(t *testing.T, httpAddr string) string {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestUpstreamSwitchFromSelfSignedToStepAndBack moves a running deployment from its self-signed root to a
// real step-ca and back, by restarting the server with and then without ca.upstream. Each switch is a root
// rotation: the roots moved to are published first and sign after ca.root_overlap (15 s here), the roots
// left stay published while SVIDs under them live. Throughout, a workload polling the Workload API four
// times a second holds an SVID that verifies against the bundle it holds at that moment, and the SVID it
// held before each switch verifies against the bundle after it: no workload holding either chain fails a
// handshake.
func TestUpstreamSwitchFromSelfSignedToStepAndBack(t *testing.T) {
	s := upstreamtest.StartStepCA(t)
	step := []string{
		"KITH_CA_UPSTREAM_STEP_URL=" + s.URL, "KITH_CA_UPSTREAM_STEP_ROOT_FILE=" + s.RootFile,
		"KITH_CA_UPSTREAM_STEP_PROVISIONER=" + s.Provisioner, "KITH_CA_UPSTREAM_STEP_PASSWORD_FILE=" + s.PasswordFile,
	}
	base := append([]string{"KITH_CA_ROOT_OVERLAP=15s"}, fastRotation...)
	c := newClusterEnv(t, base...)
	agent := c.startAgent("node1", c.joinToken("node1"))
	agent.waitOutput("kith agent started", 20*time.Second)
	socket := c.agentDirs("node1").socket
	wl := spiffeid.RequireFromPath(c.td, "/e2e/switch")
	mustKith(t, c.adminSocket, "entry", "create", "--spiffe-id", wl.String(),
		"--node-selector", "join_token:name:node1", "--selector", uidSelector())
	waitSVID(t, socket, wl)

	isStep := func(chain []*x509.Certificate) bool {
		_, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(c.td, []*x509.Certificate{s.Root}))
		return err == nil
	}
	// poll fetches until done says so, checking each SVID against the bundle fetched with it; it returns
	// the first SVID done accepts and the last one before it.
	poll := func(phase string, limit time.Duration, done func(chain []*x509.Certificate) bool) (cur, prev []*x509.Certificate) {
		t.Helper()
		deadline := time.Now().Add(limit)
		for {
			svid, x509ctx, err := fetchSVID(socket, wl)
			if err != nil {
				t.Fatalf("%s: workload api fetch failed: %v", phase, err)
			}
			b, _ := x509ctx.Bundles.GetX509BundleForTrustDomain(c.td)
			if _, _, err := x509svid.Verify(svid.Certificates, b); err != nil {
				t.Fatalf("%s: the workload's svid does not verify against the bundle it holds: %v", phase, err)
			}
			if done(svid.Certificates) {
				return svid.Certificates, prev
			}
			prev = svid.Certificates
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s", phase, limit)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	// heldVerifies checks an SVID held before a switch (the last one: SVIDs live 20 s here) against the
	// bundle the workload holds now.
	heldVerifies := func(phase string, held []*x509.Certificate) {
		t.Helper()
		_, x509ctx, err := fetchSVID(socket, wl)
		if err != nil {
			t.Fatalf("%s: %v", phase, err)
		}
		b, _ := x509ctx.Bundles.GetX509BundleForTrustDomain(c.td)
		if _, _, err := x509svid.Verify(held, b); err != nil {
			t.Errorf("%s: the svid held before the switch does not verify against the bundle now: %v", phase, err)
		}
	}

	selfSigned, _ := poll("self-signed", 5*time.Second, func(chain []*x509.Certificate) bool { return !isStep(chain) })
	if code := c.server.stop(); code != 0 {
		t.Fatalf("kith server exited %d on SIGTERM", code)
	}
	c.extraEnv = append(slices.Clone(base), step...)
	c.startServer()
	switched := time.Now()
	eventually(t, 10*time.Second, "step-ca's root in the workload's bundle before it signs", func() error {
		_, x509ctx, err := fetchSVID(socket, wl)
		if err != nil {
			return err
		}
		b, _ := x509ctx.Bundles.GetX509BundleForTrustDomain(c.td)
		if !slices.ContainsFunc(b.X509Authorities(), s.Root.Equal) {
			return fmt.Errorf("bundle has %d roots, none step-ca's", len(b.X509Authorities()))
		}
		return nil
	})
	_, lastSelfSigned := poll("switching to step-ca", 60*time.Second, isStep)
	t.Logf("svids chain to step-ca %s after the server restarted with it (root overlap 15s)", time.Since(switched).Round(time.Second))
	if time.Since(switched) < 15*time.Second {
		t.Errorf("svids chained to step-ca %s after the switch began, before the 15 s root overlap", time.Since(switched))
	}
	heldVerifies("switched to step-ca", lastSelfSigned)
	if !strings.Contains(mustKith(t, c.adminSocket, "audit", "list"), "ca.switch.upstream") {
		t.Error("the audit log has no ca.switch.upstream")
	}

	if code := c.server.stop(); code != 0 {
		t.Fatalf("kith server exited %d on SIGTERM", code)
	}
	c.extraEnv = slices.Clone(base)
	c.startServer()
	switched = time.Now()
	back, lastUnderStep := poll("switching back to a root of its own", 60*time.Second, func(chain []*x509.Certificate) bool { return !isStep(chain) })
	t.Logf("svids chain to a new root of the server's own %s after it restarted without step-ca", time.Since(switched).Round(time.Second))
	heldVerifies("switched back", lastUnderStep)
	if back[len(back)-1].Equal(selfSigned[len(selfSigned)-1]) {
		t.Error("switching back reused the intermediate of the first self-signed root")
	}
}

// TestVaultJWTAuthAcceptsJWTSVIDs: Vault's JWT auth method, configured with Kith's OIDC discovery URL (the
// JWT-SVID issuer), logs in a workload with its JWT-SVID for audience vault, binding the SPIFFE ID as the
// user, and refuses a JWT-SVID minted for another audience.
func TestVaultJWTAuthAcceptsJWTSVIDs(t *testing.T) {
	v := upstreamtest.StartVault(t)
	c := newClusterEnv(t)
	issuer := "http://" + c.httpAddr
	vc := v.Client()
	if err := vc.Sys().EnableAuthWithOptions("jwt", &vaultapi.EnableAuthOptions{Type: "jwt"}); err != nil {
		t.Fatal(err)
	}
	for p, data := range map[string]map[string]any{
		"auth/jwt/config": {"oidc_discovery_url": issuer, "bound_issuer": issuer},
	} {
		if _, err := vc.Logical().Write(p, data); err != nil {
			t.Fatalf("vault write %s: %v", p, err)
		}
	}
	if _, err := vc.Logical().Write("auth/jwt/role/deploy", map[string]any{
		"role_type": "jwt", "user_claim": "sub", "bound_audiences": []string{"vault"},
		"bound_subject": "spiffe://e2e.test/ci/deploy", "token_policies": []string{"default"}, "token_ttl": "5m",
	}); err != nil {
		t.Fatal(err)
	}
	login := func(aud string) (*vaultapi.Secret, error) {
		var minted adminv1.MintJWTSVIDResponse
		kithProto(t, c.adminSocket, &minted, "svid", "mint", "jwt", "--spiffe-id", "spiffe://e2e.test/ci/deploy", "--audience", aud)
		cl, err := vaultapi.NewClient(&vaultapi.Config{Address: v.Addr})
		if err != nil {
			t.Fatal(err)
		}
		return cl.Logical().Write("auth/jwt/login", map[string]any{"role": "deploy", "jwt": minted.GetToken()})
	}
	s, err := login("vault")
	if err != nil {
		t.Fatalf("vault jwt login with a JWT-SVID: %v", err)
	}
	if s.Auth == nil || s.Auth.ClientToken == "" || s.Auth.Metadata["role"] != "deploy" {
		t.Errorf("vault jwt login: %+v", s.Auth)
	}
	info, err := vc.Auth().Token().LookupAccessor(s.Auth.Accessor)
	if err != nil || !strings.Contains(fmt.Sprint(info.Data), "spiffe://e2e.test/ci/deploy") {
		t.Errorf("the Vault token does not name the SPIFFE ID: %v, %v", info, err)
	}
	if _, err := login("sts.amazonaws.com"); err == nil || !strings.Contains(err.Error(), "aud") {
		t.Errorf("vault jwt login with a JWT-SVID for another audience: %v, want a refusal about the audience", err)
	}
}

// TestUpstreamStepUnderKithDev: kith dev --server-config takes a server config's ca.upstream (what make demo
// UPSTREAM=step does): the dev CA's intermediate comes from a real step-ca, and an SVID minted with the
// CLI verifies to step-ca's root with openssl.
func TestUpstreamStepUnderKithDev(t *testing.T) {
	s := upstreamtest.StartStepCA(t)
	dir := shortTempDir(t)
	cfg := filepath.Join(dir, "server.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "ca:\n  upstream:\n    step:\n      url: %s\n      root_file: %s\n      provisioner: %s\n      password_file: %s\n",
		s.URL, s.RootFile, s.Provisioner, s.PasswordFile), 0o600); err != nil {
		t.Fatal(err)
	}
	dev := start(t, "kith dev", nil, "dev", "--data-dir", filepath.Join(dir, "dev"), "--http", freeAddr(t), "--server-config", cfg)
	dev.waitOutput("Press Ctrl-C to stop.", 60*time.Second)
	admin := filepath.Join(dir, "dev", "admin.sock")
	if show := mustKith(t, admin, "ca", "show"); !strings.Contains(show, "CA upstream:      step "+s.URL) {
		t.Errorf("kith ca show under kith dev --server-config:\n%s", show)
	}
	svid, key := filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid.key")
	mustKith(t, admin, "svid", "mint", "x509", "--spiffe-id", "spiffe://kith.test/demo", "--out-cert", svid, "--out-key", key)
	chain, err := os.ReadFile(svid)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := x509svid.Load(svid, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(parsed.Certificates, x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("kith.test"), []*x509.Certificate{s.Root})); err != nil {
		t.Errorf("the svid does not verify to step-ca's root: %v\n%s", err, chain)
	}
	if bad := filepath.Join(dir, "bad.yaml"); os.WriteFile(bad, []byte("ca:\n  upstream:\n    step:\n      url: x\n"), 0o600) == nil {
		r := kith(t, admin, "dev", "--data-dir", filepath.Join(dir, "dev2"), "--http", freeAddr(t), "--server-config", bad)
		if r.code == 0 || !strings.Contains(r.stderr, "ca.upstream") {
			t.Errorf("kith dev with an incomplete upstream: exit %d, %q; want it refused naming ca.upstream", r.code, r.stderr)
		}
	}
}

// TestUpstreamDemoUnderStepAndVault runs `make demo UPSTREAM=step` and `make demo UPSTREAM=vault` (the
// script itself, with this test's binary and free ports): the whole demo passes under each real upstream,
// and the SVID it mints verifies with openssl against the upstream's own root.
func TestUpstreamDemoUnderStepAndVault(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	port := func() string {
		_, p, _ := strings.Cut(freeAddr(t), ":")
		return p
	}
	for _, tc := range []struct{ upstream, verified string }{
		{"step", "# step-ca's own root"},
		{"vault", "# Vault's root"},
	} {
		t.Run(tc.upstream, func(t *testing.T) {
			cmd := exec.Command(filepath.Join(root, "scripts", "demo.sh"))
			cmd.Env = append(os.Environ(), "KITH="+kithBin(t), "KITH_DEMO_UPSTREAM="+tc.upstream,
				"KITH_DEMO_ADMIN_PORT="+port(), "KITH_DEMO_STEP_PORT="+port(), "KITH_DEMO_VAULT_PORT="+port())
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("make demo UPSTREAM=%s: %v\n%s", tc.upstream, err, out)
			}
			_, after, found := strings.Cut(string(out), tc.verified)
			if !found || !strings.Contains(strings.SplitN(after, "\n", 3)[1], ": OK") {
				t.Errorf("make demo UPSTREAM=%s did not verify its svid against the upstream's root:\n%s", tc.upstream, out)
			}
			if !strings.Contains(string(out), "== done") {
				t.Errorf("make demo UPSTREAM=%s did not reach its end:\n%s", tc.upstream, out)
			}
		})
	}
}
