package agent_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/internal/agent"
	"github.com/kithid/kith/internal/config"
	"github.com/kithid/kith/internal/server"
	"github.com/kithid/kith/internal/testutil"
)

// TestMain lets the test binary act as a workload in a child process (for the uid isolation test).
func TestMain(m *testing.M) {
	if sock := os.Getenv("KITH_TEST_FETCH_SOCKET"); sock != "" {
		os.Exit(fetchAsChild(sock))
	}
	os.Exit(m.Run())
}

func fetchAsChild(sock string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	x509ctx, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr("unix://"+sock))
	if err != nil {
		fmt.Printf("error %s\n", status.Code(errors.Unwrap(err)))
		if s, ok := status.FromError(err); ok {
			fmt.Printf("code %s\n", s.Code())
		}
		return 0
	}
	for _, s := range x509ctx.SVIDs {
		fmt.Printf("id %s\n", s.ID)
	}
	return 0
}

// harness runs a real server and a real agent in-process.
type harness struct {
	t        *testing.T
	dir      string
	grpcAddr string
	srv      *server.Server
	stopSrv  func()
	stopAg   func()
	sock     string
	minTTL   time.Duration
	// policyRepo, when set, is the policy repository the server follows (branch main).
	policyRepo string
	// serverTD is the server's trust domain; agentTD the one the agent is configured with ("": none).
	serverTD, agentTD string
	// bundleURL: bootstrap from the server's HTTP bundle endpoint instead of a PEM file; insecure adds
	// --insecure-bootstrap. log receives the agent's log when set.
	bundleURL, insecure bool
	log                 io.Writer
	// authzListen is the agent's ext_authz TCP address ("": off).
	authzListen string
}

// agentID is the SPIFFE ID the agent receives when it joins.
func (h *harness) agentID() spiffeid.ID {
	return spiffeid.RequireFromString("spiffe://" + h.serverTD + "/kith/agent/join_token/node1")
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	dir, err := os.MkdirTemp("", "kith-agent-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	h := &harness{t: t, dir: dir, grpcAddr: freeAddr(t), sock: filepath.Join(dir, "agent.sock"), minTTL: 10 * time.Second,
		serverTD: "example.org", agentTD: "example.org"}
	return h
}

func (h *harness) startServer() {
	t := h.t
	t.Helper()
	cfg := &config.Server{DataDir: filepath.Join(h.dir, "server"), TrustDomain: h.serverTD}
	cfg.Listen.GRPC, cfg.Listen.HTTP = h.grpcAddr, "127.0.0.1:0"
	cfg.SVID.MinTTL = config.Duration(h.minTTL)
	if h.policyRepo != "" {
		cfg.Policy.Git.URL, cfg.Policy.Git.Ref, cfg.Policy.Git.PollInterval = h.policyRepo, "main", config.Duration(time.Hour)
	}
	if err := cfg.Finish(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, server.Config{Config: cfg})
	if err != nil {
		cancel()
		t.Fatalf("server: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("server exited: %v", err)
	}
	h.srv = srv
	var once sync.Once
	h.stopSrv = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	t.Cleanup(h.stopSrv)
}

// startAgent starts the agent; the first time it attests with a fresh join token.
func (h *harness) startAgent() {
	h.t.Helper()
	if err := h.runAgent(); err != nil {
		h.t.Fatalf("agent exited: %v", err)
	}
}

// runAgent starts the agent and returns once it is ready, or the error it stopped with.
func (h *harness) runAgent() error {
	t := h.t
	t.Helper()
	cfg := &config.Agent{Server: h.grpcAddr, TrustDomain: h.agentTD, DataDir: filepath.Join(h.dir, "agent"), Socket: h.sock, AuthzListen: "off"}
	if h.authzListen != "" {
		cfg.AuthzListen = h.authzListen
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "state.json")); err != nil {
		tok, err := h.srv.Admin().CreateJoinToken(context.Background(), &adminv1.CreateJoinTokenRequest{Name: "node1"})
		if err != nil {
			t.Fatal(err)
		}
		cfg.JoinToken = tok.GetSecret()
		if h.bundleURL {
			cfg.TrustBundleURL, cfg.InsecureBootstrap = "http://"+h.srv.HTTPAddr().String()+"/v1/bundle", h.insecure
		}
		var roots []byte
		for _, c := range h.srv.CA().Bundle().X509Authorities() {
			roots = append(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		if !h.bundleURL {
			cfg.TrustBundle = filepath.Join(h.dir, "bundle.pem")
			if err := os.WriteFile(cfg.TrustBundle, roots, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := cfg.Finish(); err != nil {
		t.Fatal(err)
	}
	var log *slog.Logger
	if h.log != nil {
		log = slog.New(slog.NewTextHandler(h.log, nil))
	}
	a, err := agent.New(agent.Config{Config: cfg, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case <-a.Ready():
	case err := <-done:
		cancel()
		return err
	}
	var once sync.Once
	h.stopAg = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent run: %v", err)
			}
		})
	}
	t.Cleanup(h.stopAg)
	return nil
}

func (h *harness) createEntry(id string, ttl time.Duration, selectors ...string) string {
	h.t.Helper()
	resp, err := h.srv.Admin().CreateEntry(context.Background(), &adminv1.CreateEntryRequest{Entry: &adminv1.Entry{
		SpiffeId: id, ParentId: h.agentID().String(), Selectors: selectors, X509TtlSeconds: int64(ttl / time.Second),
	}})
	if err != nil {
		h.t.Fatalf("create entry %s: %v", id, err)
	}
	return resp.GetEntry().GetId()
}

func (h *harness) addr() workloadapi.ClientOption { return workloadapi.WithAddr("unix://" + h.sock) }

// fetchIDs waits until the workload's X.509 context satisfies ok, returning the SPIFFE IDs it holds.
func (h *harness) waitIDs(ok func([]string) bool) []string {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last []string
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		x, err := workloadapi.FetchX509Context(ctx, h.addr())
		cancel()
		last, lastErr = nil, err
		if err == nil {
			for _, s := range x.SVIDs {
				last = append(last, s.ID.String())
			}
		}
		if ok(last) {
			return last
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.t.Fatalf("workload ids never satisfied the condition; last %v (err %v)", last, lastErr)
	return nil
}

func has(id string) func([]string) bool {
	return func(ids []string) bool {
		for _, x := range ids {
			if x == id {
				return true
			}
		}
		return false
	}
}

func myUID() string { return "unix:uid:" + strconv.Itoa(os.Getuid()) }

func TestWorkloadGetsItsIdentitiesThroughGoSPIFFE(t *testing.T) {
	h := newHarness(t)
	h.startServer()
	h.startAgent()
	h.createEntry("spiffe://example.org/web", 0, myUID())
	h.createEntry("spiffe://example.org/api", 0, myUID())
	h.waitIDs(func(ids []string) bool { return len(ids) == 2 })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	x, err := workloadapi.FetchX509Context(ctx, h.addr())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range x.SVIDs {
		if _, _, err := x509svid.Verify(s.Certificates, x.Bundles); err != nil {
			t.Errorf("svid %s does not verify against the served bundle: %v", s.ID, err)
		}
	}

	t.Run("jwt-svids are minted and validated", func(t *testing.T) {
		client, err := workloadapi.New(ctx, h.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		web := spiffeid.RequireFromString("spiffe://example.org/web")
		svid, err := client.FetchJWTSVID(ctx, jwtParams("spiffe://example.org/api", web))
		if err != nil {
			t.Fatalf("FetchJWTSVID: %v", err)
		}
		if svid.ID != web {
			t.Errorf("jwt-svid id = %s, want %s", svid.ID, web)
		}
		got, err := client.ValidateJWTSVID(ctx, svid.Marshal(), "spiffe://example.org/api")
		if err != nil {
			t.Fatalf("ValidateJWTSVID: %v", err)
		}
		if got.ID != web {
			t.Errorf("validated id = %s", got.ID)
		}
		if _, err := client.ValidateJWTSVID(ctx, svid.Marshal(), "spiffe://example.org/other"); err == nil {
			t.Error("token validated for the wrong audience")
		}
	})

	t.Run("two workloads complete an mTLS handshake with spiffetls", func(t *testing.T) {
		pick := func(id string) workloadapi.X509SourceOption {
			return workloadapi.WithDefaultX509SVIDPicker(func(svids []*x509svid.SVID) *x509svid.SVID {
				for _, s := range svids {
					if s.ID.String() == id {
						return s
					}
				}
				return svids[0]
			})
		}
		webSrc, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(h.addr()), pick("spiffe://example.org/web"))
		if err != nil {
			t.Fatal(err)
		}
		defer webSrc.Close()
		apiSrc, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(h.addr()), pick("spiffe://example.org/api"))
		if err != nil {
			t.Fatal(err)
		}
		defer apiSrc.Close()
		lis, err := spiffetls.ListenWithMode(ctx, "tcp", "127.0.0.1:0",
			spiffetls.MTLSServerWithSource(tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://example.org/web")), apiSrc))
		if err != nil {
			t.Fatal(err)
		}
		defer lis.Close()
		serverPeer := make(chan string, 1)
		go func() {
			c, err := lis.Accept()
			if err != nil {
				serverPeer <- err.Error()
				return
			}
			defer c.Close()
			c.Write([]byte("x"))
			id, err := spiffetls.PeerIDFromConn(c)
			if err != nil {
				serverPeer <- err.Error()
				return
			}
			serverPeer <- id.String()
		}()
		conn, err := spiffetls.DialWithMode(ctx, "tcp", lis.Addr().String(),
			spiffetls.MTLSClientWithSource(tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://example.org/api")), webSrc))
		if err != nil {
			t.Fatalf("mTLS dial: %v", err)
		}
		defer conn.Close()
		buf := make([]byte, 1)
		conn.Read(buf)
		clientPeer, _ := spiffetls.PeerIDFromConn(conn)
		if diff := cmp.Diff([]string{"spiffe://example.org/api", "spiffe://example.org/web"}, []string{clientPeer.String(), <-serverPeer}); diff != "" {
			t.Errorf("peer ids (-want +got):\n%s", diff)
		}
	})
}

func jwtParams(aud string, id spiffeid.ID) jwtsvid.Params {
	return jwtsvid.Params{Audience: aud, Subject: id}
}

func TestWorkloadAPIRefusals(t *testing.T) {
	h := newHarness(t)
	h.startServer()
	h.startAgent()
	h.createEntry("spiffe://example.org/someone-else", 0, "unix:uid:4242")
	conn, err := grpc.NewClient("unix://"+h.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := workload.NewSpiffeWorkloadAPIClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	t.Run("a request without the security header is InvalidArgument", func(t *testing.T) {
		stream, err := client.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
		if err == nil {
			_, err = stream.Recv()
		}
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("code = %v (%v), want InvalidArgument", status.Code(err), err)
		}
	})
	t.Run("an unregistered workload is PermissionDenied", func(t *testing.T) {
		_, err := workloadapi.FetchX509Context(ctx, h.addr())
		if status.Code(errors.Unwrap(err)) != codes.PermissionDenied && !strings.Contains(fmt.Sprint(err), "PermissionDenied") {
			t.Errorf("err = %v, want PermissionDenied", err)
		}
	})
}

func TestDeletingAnEntryDropsItFromTheStream(t *testing.T) {
	h := newHarness(t)
	h.startServer()
	h.startAgent()
	h.createEntry("spiffe://example.org/keep", 0, myUID())
	gone := h.createEntry("spiffe://example.org/gone", 0, myUID())
	h.waitIDs(func(ids []string) bool { return len(ids) == 2 })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	updates := make(chan []string, 16)
	go workloadapi.WatchX509Context(ctx, watcher{updates}, h.addr())
	for ids := range updates {
		if len(ids) == 2 {
			break
		}
	}
	if _, err := h.srv.Admin().DeleteEntry(ctx, &adminv1.DeleteEntryRequest{Id: gone}); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case ids := <-updates:
			if cmp.Equal(ids, []string{"spiffe://example.org/keep"}) {
				return
			}
		case <-ctx.Done():
			t.Fatal("stream never dropped the deleted entry's svid")
		}
	}
}

type watcher struct{ ch chan []string }

func (w watcher) OnX509ContextUpdate(x *workloadapi.X509Context) {
	var ids []string
	for _, s := range x.SVIDs {
		ids = append(ids, s.ID.String())
	}
	w.ch <- ids
}
func (w watcher) OnX509ContextWatchError(error) {}

func TestStreamReceivesARotatedSVIDBeforeTheOldExpires(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a 12 s SVID to rotate")
	}
	h := newHarness(t)
	h.startServer()
	h.startAgent()
	h.createEntry("spiffe://example.org/short", 12*time.Second, myUID())
	h.waitIDs(has("spiffe://example.org/short"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	certs := make(chan *x509.Certificate, 16)
	go workloadapi.WatchX509Context(ctx, certWatcher{certs}, h.addr())
	first := <-certs
	for {
		select {
		case c := <-certs:
			if c.SerialNumber.Cmp(first.SerialNumber) == 0 {
				continue
			}
			t.Logf("first svid %s valid %s..%s; rotated svid %s valid %s..%s, received %s", first.SerialNumber.Text(16), first.NotBefore, first.NotAfter, c.SerialNumber.Text(16), c.NotBefore, c.NotAfter, time.Now())
			if !time.Now().Before(first.NotAfter) {
				t.Fatalf("new svid arrived at %s, after the old one expired at %s", time.Now(), first.NotAfter)
			}
			return
		case <-ctx.Done():
			t.Fatal("no rotated svid arrived")
		}
	}
}

type certWatcher struct{ ch chan *x509.Certificate }

func (w certWatcher) OnX509ContextUpdate(x *workloadapi.X509Context) {
	if len(x.SVIDs) > 0 {
		w.ch <- x.SVIDs[0].Certificates[0]
	}
}
func (w certWatcher) OnX509ContextWatchError(error) {}

func TestAgentSurvivesAServerOutage(t *testing.T) {
	h := newHarness(t)
	h.startServer()
	h.startAgent()
	h.createEntry("spiffe://example.org/before", 0, myUID())
	h.waitIDs(has("spiffe://example.org/before"))

	h.stopSrv()
	h.waitIDs(has("spiffe://example.org/before"))

	h.stopAg()
	h.startAgent()
	h.waitIDs(has("spiffe://example.org/before"))

	h.startServer()
	h.createEntry("spiffe://example.org/after", 0, myUID())
	h.waitIDs(func(ids []string) bool {
		return has("spiffe://example.org/after")(ids) && has("spiffe://example.org/before")(ids)
	})
}

func TestWorkloadsUnderDifferentUIDsGetOnlyTheirOwnIdentity(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start workloads under other uids")
	}
	h := newHarness(t)
	h.startServer()
	h.startAgent()
	h.createEntry("spiffe://example.org/uid-65534", 0, "unix:uid:65534")
	h.createEntry("spiffe://example.org/uid-65533", 0, "unix:uid:65533")
	bin := filepath.Join(h.dir, "workload.test")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	// run starts the workload under uid until it reports an identity (the agent may still be signing).
	run := func(uid uint32) string {
		var got string
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			cmd := exec.Command(bin)
			cmd.Env = []string{"KITH_TEST_FETCH_SOCKET=" + h.sock}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child uid %d: %v: %s", uid, err, out)
			}
			if got = strings.TrimSpace(string(out)); strings.Contains(got, "id spiffe") {
				break
			}
		}
		return got
	}
	for _, tt := range []struct {
		uid  uint32
		want string
	}{
		{65534, "id spiffe://example.org/uid-65534"},
		{65533, "id spiffe://example.org/uid-65533"},
		{65532, "PermissionDenied"},
	} {
		got := run(tt.uid)
		if !strings.Contains(got, tt.want) || (tt.uid != 65532 && strings.Count(got, "id spiffe") != 1) {
			t.Errorf("uid %d got %q, want only %q", tt.uid, got, tt.want)
		}
	}
}

// Without --trust-domain the agent takes its trust domain from the bootstrap bundle's roots, and after a
// restart from its saved SVID; with one that differs from the bundle's it refuses to start and says what to set.
func TestAgentTrustDomainFromTheBundle(t *testing.T) {
	t.Run("taken from the bundle, then from the saved state", func(t *testing.T) {
		h := newHarness(t)
		h.serverTD, h.agentTD = "acme.test", ""
		h.startServer()
		h.startAgent()
		h.createEntry("spiffe://acme.test/web", 0, myUID())
		h.waitIDs(has("spiffe://acme.test/web"))
		h.stopAg()
		h.stopSrv()
		h.startAgent() // no server, no bundle, no token: the saved state says acme.test
		h.waitIDs(has("spiffe://acme.test/web"))
	})
	t.Run("configured differently", func(t *testing.T) {
		h := newHarness(t)
		h.serverTD, h.agentTD = "acme.test", "example.org"
		h.startServer()
		err := h.runAgent()
		if err == nil || !strings.Contains(err.Error(), "is for trust domain acme.test") || !strings.Contains(err.Error(), "--trust-domain acme.test") {
			t.Fatalf("agent start = %v, want a refusal naming --trust-domain acme.test", err)
		}
	})
}

// --trust-bundle-url bootstraps from the server's bundle endpoint only with --insecure-bootstrap, and
// says so in the log; the trust domain comes from the fetched roots.
func TestAgentBootstrapsFromTheBundleURL(t *testing.T) {
	t.Run("refused without --insecure-bootstrap", func(t *testing.T) {
		h := newHarness(t)
		h.bundleURL = true
		h.startServer()
		if err := h.runAgent(); err == nil || !strings.Contains(err.Error(), "--insecure-bootstrap") {
			t.Fatalf("agent start = %v, want a refusal naming --insecure-bootstrap", err)
		}
	})
	t.Run("with --insecure-bootstrap", func(t *testing.T) {
		h := newHarness(t)
		var log testutil.Buffer
		h.serverTD, h.agentTD, h.bundleURL, h.insecure, h.log = "acme.test", "", true, true, &log
		h.startServer()
		h.startAgent()
		h.createEntry("spiffe://acme.test/web", 0, myUID())
		h.waitIDs(has("spiffe://acme.test/web"))
		if out := log.String(); !strings.Contains(out, "level=WARN") || !strings.Contains(out, "insecure bootstrap") {
			t.Errorf("no warning about the insecure bootstrap in the log:\n%s", out)
		}
	})
}

// A second agent on a host (its ext_authz port taken by the first) fails before it attests: its one-time
// join token is still unused, and it leaves no socket behind.
func TestAnAgentThatCannotListenKeepsItsJoinTokenUnused(t *testing.T) {
	h := newHarness(t)
	h.startServer()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	h.authzListen = busy.Addr().String()
	err = h.runAgent()
	if err == nil || !strings.Contains(err.Error(), "authz listen "+busy.Addr().String()) {
		t.Fatalf("agent with a busy ext_authz port: %v, want the listen error", err)
	}
	toks, err := h.srv.Admin().ListJoinTokens(context.Background(), &adminv1.ListJoinTokensRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(toks.GetTokens()) != 1 || toks.GetTokens()[0].GetUsedAt() != nil {
		t.Errorf("join tokens after the failed start: %v, want one, unused", toks.GetTokens())
	}
	if _, err := os.Stat(h.sock); !os.IsNotExist(err) {
		t.Errorf("the failed agent left its socket: %v", err)
	}
}
