// Package kithenv starts Kith for the load programs under bench/: the real `kith server` and `kith agent`
// binaries as child processes on a temporary directory (so their memory can be read from /proc), or a
// server in-process. Everything listens on loopback or unix sockets and is removed by Close.
package kithenv

import (
	"bufio"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/attestation/node/jointoken"
	"github.com/kithid/kith/internal/agent"
	"github.com/kithid/kith/internal/config"
	"github.com/kithid/kith/internal/server"
)

// TrustDomain is the trust domain every bench environment uses.
const TrustDomain = "example.org"

// NodeName is the join token name of the bench agent; its SPIFFE ID is AgentID.
const NodeName = "bench"

// AgentID is the SPIFFE ID the bench agent receives when it joins.
var AgentID = jointoken.AgentID(spiffeid.RequireTrustDomainFromString(TrustDomain), NodeName, "")

// Processes is a `kith server` and (optionally) a `kith agent` running as children of this process.
type Processes struct {
	Dir         string
	AdminSocket string
	AgentSocket string
	Admin       adminv1.AdminServiceClient
	Server      *exec.Cmd
	Agent       *exec.Cmd
	// InProcessAgent is the agent when started by StartInProcess.
	InProcessAgent *agent.Agent

	adminConn *grpc.ClientConn
	closers   []func()
}

// Options tune StartProcesses.
type Options struct {
	Bin      string // path to the kith binary; required
	NoAgent  bool   // start only the server
	LogLevel string // for both; zero: warn
	HTTPAddr string // the server's listen.http; zero: 127.0.0.1:0
}

// StartProcesses starts `kith server` on a temp dir, creates a join token and the bootstrap bundle through
// the admin socket, and starts `kith agent` with them. Close stops both and removes the directory.
func StartProcesses(ctx context.Context, o Options) (*Processes, error) {
	if o.LogLevel == "" {
		o.LogLevel = "warn"
	}
	bin, dir, err := prepare(o.Bin)
	if err != nil {
		return nil, err
	}
	p := &Processes{Dir: dir, AdminSocket: filepath.Join(dir, "server", "admin.sock"), AgentSocket: filepath.Join(dir, "agent.sock")}
	if o.HTTPAddr == "" {
		o.HTTPAddr = "127.0.0.1:0"
	}
	srv, err := startServer(ctx, bin, dir, o.LogLevel, o.HTTPAddr, nil)
	p.Server, p.adminConn, p.Admin = srv.cmd, srv.conn, srv.admin
	if err != nil {
		p.Close()
		return nil, err
	}
	if o.NoAgent {
		return p, nil
	}
	tok, err := p.Admin.CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{Name: NodeName})
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("create join token: %w", err)
	}
	p.Agent = agentCommand(bin, srv.grpcAddr, tok.GetSecret(), srv.roots, filepath.Join(dir, "agent"), p.AgentSocket, o.LogLevel,
		"KITH_AGENT_AUTHZ_LISTEN=off")
	if err := start(p.Agent, filepath.Join(dir, "agent.log")); err != nil {
		p.Close()
		return nil, fmt.Errorf("start kith agent: %w", err)
	}
	if err := waitSocket(ctx, p.AgentSocket, p.Agent, filepath.Join(dir, "agent.log")); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// prepare checks the kith binary and makes the temp dir every process of a bench environment lives in.
func prepare(bin string) (abs, dir string, err error) {
	if abs, err = filepath.Abs(bin); err != nil {
		return "", "", err
	}
	if _, err := os.Stat(abs); err != nil {
		return "", "", fmt.Errorf("kith binary: %w (run make build)", err)
	}
	dir, err = os.MkdirTemp("", "kith-bench-")
	return abs, dir, err
}

// serverProc is a started `kith server` child.
type serverProc struct {
	cmd      *exec.Cmd
	grpcAddr string // the agent API
	roots    string // PEM file of its X.509 roots, for an agent's --trust-bundle
	conn     *grpc.ClientConn
	admin    adminv1.AdminServiceClient
}

// startServer starts `kith server` with its data in dir/server and its log in dir/server.log, the HTTP
// listener on httpAddr and env added, waits for its admin socket, and writes its roots to dir/roots.pem. It
// makes dir traversable for agents run as other users. What it started is returned even with an error,
// for the caller to stop.
func startServer(ctx context.Context, bin, dir, logLevel, httpAddr string, env []string) (serverProc, error) {
	var s serverProc
	var err error
	if s.grpcAddr, err = freeAddr(); err != nil {
		return s, err
	}
	logPath, adminSocket := filepath.Join(dir, "server.log"), filepath.Join(dir, "server", "admin.sock")
	s.cmd = exec.Command(bin, "server", "--data-dir", filepath.Join(dir, "server"), "--trust-domain", TrustDomain, "--log-level", logLevel)
	s.cmd.Env = append(append(os.Environ(), "KITH_LISTEN_GRPC="+s.grpcAddr, "KITH_LISTEN_HTTP="+httpAddr), env...)
	if err := start(s.cmd, logPath); err != nil {
		return s, fmt.Errorf("start kith server: %w", err)
	}
	if err := waitSocket(ctx, adminSocket, s.cmd, logPath); err != nil {
		return s, err
	}
	if s.conn, s.admin, err = DialAdmin(adminSocket); err != nil {
		return s, err
	}
	b, err := s.admin.GetBundle(ctx, &adminv1.GetBundleRequest{})
	if err != nil {
		return s, fmt.Errorf("get bundle: %w", err)
	}
	var roots []byte
	for _, der := range b.GetX509Authorities() {
		roots = append(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	s.roots = filepath.Join(dir, "roots.pem")
	if err := os.WriteFile(s.roots, roots, 0o600); err != nil {
		return s, err
	}
	return s, os.Chmod(dir, 0o755)
}

// agentCommand is `kith agent` joining the server at grpcAddr with a join token, env added.
func agentCommand(bin, grpcAddr, token, roots, dataDir, socket, logLevel string, env ...string) *exec.Cmd {
	c := exec.Command(bin, "agent", "--server", grpcAddr, "--join-token", token, "--trust-bundle", roots,
		"--data-dir", dataDir, "--socket", socket, "--trust-domain", TrustDomain, "--log-level", logLevel)
	c.Env = append(os.Environ(), env...)
	return c
}

// Close stops the children (SIGTERM, then SIGKILL after 5 s) and removes the directory.
func (p *Processes) Close() {
	if p.adminConn != nil {
		p.adminConn.Close()
	}
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
	for _, c := range []*exec.Cmd{p.Agent, p.Server} {
		stop(c)
	}
	os.RemoveAll(p.Dir)
}

func stop(c *exec.Cmd) {
	if c == nil || c.Process == nil {
		return
	}
	_ = c.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = c.Process.Kill()
		<-done
	}
}

func start(c *exec.Cmd, logPath string) error {
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	c.Stdout, c.Stderr = f, f
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = c.Start()
	f.Close()
	return err
}

func waitSocket(ctx context.Context, path string, c *exec.Cmd, logPath string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if conn, err := net.Dial("unix", path); err == nil {
			conn.Close()
			return nil
		}
		if c.ProcessState != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	log, _ := os.ReadFile(logPath)
	return fmt.Errorf("%s did not come up on %s:\n%s", filepath.Base(c.Path), path, log)
}

// DialAdmin connects to a server's admin socket the way the kith CLI does.
func DialAdmin(socket string) (*grpc.ClientConn, adminv1.AdminServiceClient, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20)))
	if err != nil {
		return nil, nil, fmt.Errorf("dial admin socket %s: %w", socket, err)
	}
	return conn, adminv1.NewAdminServiceClient(conn), nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Memory is a process's resident set as /proc/PID/status reports it.
type Memory struct {
	RSS  int64 // VmRSS, bytes
	Peak int64 // VmHWM, bytes
	Anon int64 // RssAnon: heap, stacks and other private memory, bytes
	File int64 // RssFile: pages of the executable and other files mapped in, bytes
}

// ReadMemory reads VmRSS and VmHWM of pid.
func ReadMemory(pid int) (Memory, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return Memory{}, err
	}
	defer f.Close()
	var m Memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		field := map[string]*int64{"VmRSS": &m.RSS, "VmHWM": &m.Peak, "RssAnon": &m.Anon, "RssFile": &m.File}[k]
		if !ok || field == nil {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("parse %s %q: %w", k, v, err)
		}
		*field = kb << 10
	}
	if m.RSS == 0 {
		return Memory{}, errors.New("no VmRSS in /proc/" + strconv.Itoa(pid) + "/status")
	}
	return m, sc.Err()
}

// MiB formats bytes as mebibytes.
func MiB(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// StartInProcess runs the same server and agent as StartProcesses, but in this process (Server and Agent
// stay nil), so that a CPU profile of the benchmark covers them.
func StartInProcess(ctx context.Context) (*Processes, error) {
	srv, err := StartServer(ctx)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(filepath.Dir(srv.AdminSocket))
	p := &Processes{Dir: dir, AdminSocket: srv.AdminSocket, AgentSocket: filepath.Join(dir, "agent.sock")}
	p.closers = append(p.closers, func() { srv.Close() })
	if p.adminConn, p.Admin, err = DialAdmin(p.AdminSocket); err != nil {
		p.Close()
		return nil, err
	}
	tok, err := p.Admin.CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{Name: NodeName})
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("create join token: %w", err)
	}
	var roots []byte
	for _, c := range srv.Server.CA().Bundle().X509Authorities() {
		roots = append(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	cfg := &config.Agent{Server: srv.Server.GRPCAddr().String(), TrustDomain: TrustDomain, DataDir: filepath.Join(dir, "agent"),
		Socket: p.AgentSocket, AuthzListen: "off", JoinToken: tok.GetSecret(), TrustBundle: filepath.Join(dir, "roots.pem")}
	if err := os.WriteFile(cfg.TrustBundle, roots, 0o600); err != nil {
		p.Close()
		return nil, err
	}
	if err := cfg.Finish(); err != nil {
		p.Close()
		return nil, err
	}
	a, err := agent.New(agent.Config{Config: cfg})
	if err != nil {
		p.Close()
		return nil, err
	}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(actx) }()
	p.closers = append(p.closers, func() { cancel(); <-done })
	p.InProcessAgent = a
	select {
	case <-a.Ready():
		return p, nil
	case err := <-done:
		p.Close()
		return nil, fmt.Errorf("agent exited: %w", err)
	}
}

// InProcessServer is a Kith server running in this process.
type InProcessServer struct {
	Server      *server.Server
	AdminSocket string
	dir         string
	cancel      context.CancelFunc
	done        chan error
}

// StartServer runs a server in-process on a temp dir, with the CA keys on disk as in production.
func StartServer(ctx context.Context) (*InProcessServer, error) {
	return StartServerWith(ctx, nil)
}

// StartServerWith is StartServer with mod applied to the config first (nil: none); mod gets the server's
// temp dir, for files it configures.
func StartServerWith(ctx context.Context, mod func(cfg *config.Server, dir string) error) (*InProcessServer, error) {
	dir, err := os.MkdirTemp("", "kith-bench-")
	if err != nil {
		return nil, err
	}
	cfg := &config.Server{DataDir: filepath.Join(dir, "server"), TrustDomain: TrustDomain}
	cfg.Listen.GRPC, cfg.Listen.HTTP = "127.0.0.1:0", "127.0.0.1:0"
	if mod != nil {
		if err := mod(cfg, dir); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if err := cfg.Finish(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	srv, err := server.New(ctx, server.Config{Config: cfg})
	if err != nil {
		cancel()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start server: %w", err)
	}
	s := &InProcessServer{Server: srv, AdminSocket: cfg.Listen.AdminSocket, dir: dir, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
		return s, nil
	case err := <-s.done:
		cancel()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("server exited: %w", err)
	}
}

// Close stops the server and removes its directory.
func (s *InProcessServer) Close() error {
	s.cancel()
	err := <-s.done
	os.RemoveAll(s.dir)
	return err
}
