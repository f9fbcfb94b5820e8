//go:build e2e

// Package e2e runs the real kith binary (env KITH_BIN, set by `make test-e2e`) as separate processes and
// talks to it the way operators and workloads do: the CLI, and go-spiffe's Workload API client.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/internal/testutil"
)

// helperModes are other roles the test binary can play instead of running tests, chosen by an
// environment variable (its key) whose value is the function's argument; the function returns the exit
// code. Tests start one with helperProcess, e.g. to act under another uid.
var helperModes = map[string]func(arg string) int{}

func TestMain(m *testing.M) {
	for env, f := range helperModes {
		if v := os.Getenv(env); v != "" {
			os.Exit(f(v))
		}
	}
	os.Exit(m.Run())
}

// helperProcess prepares the test binary to run in helper mode mode (a helperModes key) with arg, as uid
// and gid: the binary is copied into dir (the build directory is 0700), which uid must be able to read.
func helperProcess(t *testing.T, dir, mode, arg string, uid uint32) *exec.Cmd {
	t.Helper()
	if _, ok := helperModes[mode]; !ok {
		t.Fatalf("no helper mode %s", mode)
	}
	bin := filepath.Join(dir, "e2e-helper")
	if _, err := os.Stat(bin); err != nil {
		testutil.CopyExecutable(t, os.Args[0], bin)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), mode+"="+arg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	return cmd
}

// kithBin is the binary under test; tests skip without it.
func kithBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("KITH_BIN")
	if bin == "" {
		t.Skip("KITH_BIN is not set: run `make test-e2e` (or KITH_BIN=$PWD/bin/kith go test -tags e2e ./test/e2e/...)")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("KITH_BIN: %v", err)
	}
	return bin
}

// shortTempDir makes a 0755 directory directly under /tmp: unix socket paths must stay under 108 bytes,
// and t.TempDir() paths are long.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "ke")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is a kith process started in the background.
type proc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdout testutil.Buffer
	stderr testutil.Buffer
	done   chan struct{}
	err    error // set when done is closed
}

// start runs `kith args...` with env added to the test's environment. The process is killed at the end
// of the test if still running, and its output is logged if the test failed.
func start(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	return startCmd(t, name, env, exec.Command(kithBin(t), args...))
}

// startUmask is start with the process's umask set to umask (through sh, as an operator's shell would).
func startUmask(t *testing.T, name string, umask os.FileMode, env []string, args ...string) *proc {
	t.Helper()
	script := fmt.Sprintf("umask %03o && exec \"$0\" \"$@\"", umask)
	return startCmd(t, name, env, exec.Command("sh", append([]string{"-c", script, kithBin(t)}, args...)...))
}

// startCmd is start for a prepared command (path and arguments set).
func startCmd(t *testing.T, name string, env []string, cmd *exec.Cmd) *proc {
	t.Helper()
	args := cmd.Args[1:]
	p := &proc{t: t, name: name, done: make(chan struct{}), cmd: cmd}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- %s (kith %s) stdout:\n%s", name, strings.Join(args, " "), p.stdout.String())
			t.Logf("--- %s stderr:\n%s", name, p.stderr.String())
		}
	})
	return p
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitOutput waits until stdout or stderr contains s; it fails the test if the process exits first.
func (p *proc) waitOutput(s string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(p.stdout.String(), s) || strings.Contains(p.stderr.String(), s) {
			return
		}
		if p.exited() {
			p.t.Fatalf("%s exited (%v) before printing %q\nstderr:\n%s", p.name, p.err, s, p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatalf("%s did not print %q within %s", p.name, s, timeout)
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("%s did not exit within %s", p.name, timeout)
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee):
		return ee.ExitCode()
	default:
		p.t.Fatalf("%s: %v", p.name, p.err)
		return -1
	}
}

// stop sends SIGTERM and returns the exit code.
func (p *proc) stop() int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatalf("SIGTERM %s: %v", p.name, err)
	}
	return p.wait(15 * time.Second)
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		p.t.Fatalf("SIGKILL %s: %v", p.name, err)
	}
	<-p.done
}

// result is a finished CLI run.
type result struct {
	stdout, stderr string
	code           int
}

// kith runs one CLI command against the admin socket and returns its output and exit code.
func kith(t *testing.T, adminSocket string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kithBin(t), args...)
	cmd.Env = append(os.Environ(), "KITH_ADMIN_SOCKET="+adminSocket)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("kith %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// mustKith is kith that fails the test unless the command exits 0.
func mustKith(t *testing.T, adminSocket string, args ...string) string {
	t.Helper()
	r := kith(t, adminSocket, args...)
	if r.code != 0 {
		t.Fatalf("kith %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// kithProto runs a CLI command with -o json and decodes its output into m.
func kithProto(t *testing.T, adminSocket string, m proto.Message, args ...string) {
	t.Helper()
	out := mustKith(t, adminSocket, append(args, "-o", "json")...)
	if err := protojson.Unmarshal([]byte(out), m); err != nil {
		t.Fatalf("kith %s -o json: decode %T: %v\n%s", strings.Join(args, " "), m, err, out)
	}
}

// uidSelector selects this test process as a workload.
func uidSelector() string { return "unix:uid:" + strconv.Itoa(os.Getuid()) }

// eventually retries f every 100 ms until it returns nil or timeout passes, then fails with its last error.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fetchSVID asks the agent on socket for this process's X.509-SVIDs (one Workload API call) and returns
// the one with id, verified against the bundle that came with it.
func fetchSVID(socket string, id spiffeid.ID) (*x509svid.SVID, *workloadapi.X509Context, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	x509ctx, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr("unix://"+socket))
	if err != nil {
		return nil, nil, fmt.Errorf("fetch x509 context: %w", err)
	}
	var have []string
	for _, s := range x509ctx.SVIDs {
		if s.ID == id {
			if _, _, err := x509svid.Verify(s.Certificates, x509ctx.Bundles); err != nil {
				return nil, nil, fmt.Errorf("svid %s does not verify against the workload api bundle: %w", id, err)
			}
			return s, x509ctx, nil
		}
		have = append(have, s.ID.String())
	}
	return nil, nil, fmt.Errorf("no svid for %s yet (have %v)", id, have)
}

// waitSVID waits until the agent on socket serves id to this process.
func waitSVID(t *testing.T, socket string, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	var svid *x509svid.SVID
	eventually(t, 15*time.Second, "workload api fetch of "+id.String(), func() error {
		s, _, err := fetchSVID(socket, id)
		svid = s
		return err
	})
	return svid
}

// serverBundle reads the server's SPIFFE bundle with the CLI.
func serverBundle(t *testing.T, adminSocket string, td spiffeid.TrustDomain) *spiffebundle.Bundle {
	t.Helper()
	out := mustKith(t, adminSocket, "bundle", "show", "--format", "spiffe")
	b, err := spiffebundle.Parse(td, []byte(out))
	if err != nil {
		t.Fatalf("kith bundle show --format spiffe: %v\n%s", err, out)
	}
	return b
}

// cluster is a `kith server` and its data, on fixed ports so it can be restarted in place.
type cluster struct {
	t           *testing.T
	dir         string
	td          spiffeid.TrustDomain
	grpcAddr    string
	httpAddr    string
	adminSocket string
	server      *proc
	// serverEnv is added to the server's environment (KITH_* settings); changing it takes effect at the
	// next startServer.
	extraEnv []string
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	return newClusterEnv(t)
}

// newClusterEnv is newCluster with the server's environment extended by env.
func newClusterEnv(t *testing.T, env ...string) *cluster {
	t.Helper()
	dir := shortTempDir(t)
	c := &cluster{
		t: t, dir: dir, td: spiffeid.RequireTrustDomainFromString("e2e.test"),
		grpcAddr: freeAddr(t), httpAddr: freeAddr(t),
		adminSocket: filepath.Join(dir, "server", "admin.sock"),
		extraEnv:    env,
	}
	c.startServer()
	return c
}

// startServer starts (or restarts) `kith server` on the cluster's ports and data dir.
func (c *cluster) startServer() {
	c.t.Helper()
	c.server = start(c.t, "server", c.serverEnv(), c.serverArgs()...)
	c.server.waitOutput("kith server started", 20*time.Second)
}

// joinToken creates a join token named name and returns its secret.
func (c *cluster) joinToken(name string) string {
	c.t.Helper()
	var resp adminv1.CreateJoinTokenResponse
	kithProto(c.t, c.adminSocket, &resp, "token", "create", "--name", name, "--ttl", "10m")
	if resp.GetSecret() == "" {
		c.t.Fatalf("kith token create -o json printed no secret")
	}
	return resp.GetSecret()
}

// agentDirs names one agent's data dir and socket.
type agentDirs struct{ data, socket string }

func (c *cluster) agentDirs(name string) agentDirs {
	return agentDirs{data: filepath.Join(c.dir, name), socket: filepath.Join(c.dir, name+".sock")}
}

// startAgent starts `kith agent`; with a token it joins with it and the server's bundle (first start),
// without one it must restore its persisted state.
func (c *cluster) startAgent(name, token string) *proc {
	c.t.Helper()
	return c.startAgentEnv(name, token, "KITH_AGENT_RETRY_MAX=1s")
}

// startAgentEnv is startAgent with env added to what every agent gets: without KITH_AGENT_RETRY_MAX the
// agent reconnects with its default backoff.
func (c *cluster) startAgentEnv(name, token string, extra ...string) *proc {
	c.t.Helper()
	d := c.agentDirs(name)
	args := []string{"agent", "--server", c.grpcAddr, "--trust-domain", c.td.Name(), "--data-dir", d.data, "--socket", d.socket}
	if token != "" {
		bundle := filepath.Join(c.dir, "bundle.pem")
		if _, err := os.Stat(bundle); err != nil {
			out := mustKith(c.t, c.adminSocket, "bundle", "show", "--format", "pem")
			if err := os.WriteFile(bundle, []byte(out), 0o644); err != nil {
				c.t.Fatal(err)
			}
		}
		args = append(args, "--join-token", token, "--trust-bundle", bundle)
	}
	// ext_authz on TCP would clash between agents and parallel tests; the unix socket is enough, one per
	// agent as on separate nodes (an agent refuses to start on a socket another one serves).
	env := []string{"KITH_AGENT_AUTHZ_LISTEN=off", "KITH_AGENT_AUTHZ_SOCKET=" + c.authzSocket(name)}
	return start(c.t, "agent "+name, append(env, extra...), args...)
}

// authzSocket is where agent name serves ext_authz.
func (c *cluster) authzSocket(name string) string {
	return filepath.Join(c.dir, name+"-authz.sock")
}

// authzAllowed asks the agent's ext_authz on socket, as Envoy would for an mTLS request from caller to
// target, whether method path is allowed.
func authzAllowed(socket string, caller, target spiffeid.ID, method, path string) (bool, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return false, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Principal: caller.String()},
		Destination: &authv3.AttributeContext_Peer{Principal: target.String()},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: path, Host: target.Path(), Scheme: "https", Protocol: "HTTP/2",
			Headers: map[string]string{":method": method, ":path": path},
		}},
	}})
	if err != nil {
		return false, err
	}
	return resp.GetStatus().GetCode() == 0, nil
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
