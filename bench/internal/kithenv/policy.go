package kithenv

import (
	"context"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"google.golang.org/grpc"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

// ClusterOptions tune StartCluster.
type ClusterOptions struct {
	Bin    string // path to the kith binary; required
	Agents int    // agents to start; zero: 1
	// ServerEnv is added to the server's environment (e.g. KITH_POLICY_GIT_URL=...).
	ServerEnv []string
	LogLevel  string // for all processes; zero: warn
	LogFormat string // text or json, for all processes; zero: text
}

// Cluster is a `kith server` and several `kith agent`s running as children of this process, each agent
// with its own data dir, Workload API socket and ext_authz socket.
type Cluster struct {
	Dir         string
	AdminSocket string
	HTTPAddr    string // the server's HTTP listener (host:port): /metrics, /v1/policy/webhook
	ServerLog   string
	Admin       adminv1.AdminServiceClient
	Server      *exec.Cmd
	Agents      []*ClusterAgent

	adminConn *grpc.ClientConn
}

// ClusterAgent is one agent of a Cluster.
type ClusterAgent struct {
	Name        string // join token name: its SPIFFE ID is spiffe://example.org/kith/agent/join_token/<Name>
	Socket      string // Workload API
	AuthzSocket string // Envoy ext_authz
	Log         string
	Cmd         *exec.Cmd
}

// StartCluster starts `kith server` on a temp dir and o.Agents agents joined with their own join tokens.
// Close stops them all and removes the directory.
func StartCluster(ctx context.Context, o ClusterOptions) (*Cluster, error) {
	if o.LogLevel == "" {
		o.LogLevel = "warn"
	}
	if o.LogFormat == "" {
		o.LogFormat = "text"
	}
	if o.Agents <= 0 {
		o.Agents = 1
	}
	bin, err := filepath.Abs(o.Bin)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("kith binary: %w (run make build)", err)
	}
	dir, err := os.MkdirTemp("", "kith-bench-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, AdminSocket: filepath.Join(dir, "server", "admin.sock"), ServerLog: filepath.Join(dir, "server.log")}
	grpcAddr, err := freeAddr()
	if err != nil {
		c.Close()
		return nil, err
	}
	if c.HTTPAddr, err = freeAddr(); err != nil {
		c.Close()
		return nil, err
	}
	logEnv := []string{"KITH_LOG_FORMAT=" + o.LogFormat}
	c.Server = exec.Command(bin, "server", "--data-dir", filepath.Join(dir, "server"), "--trust-domain", TrustDomain, "--log-level", o.LogLevel)
	c.Server.Env = append(append(append(os.Environ(), logEnv...), "KITH_LISTEN_GRPC="+grpcAddr, "KITH_LISTEN_HTTP="+c.HTTPAddr), o.ServerEnv...)
	if err := start(c.Server, c.ServerLog); err != nil {
		c.Close()
		return nil, fmt.Errorf("start kith server: %w", err)
	}
	if err := waitSocket(ctx, c.AdminSocket, c.Server, c.ServerLog); err != nil {
		c.Close()
		return nil, err
	}
	if c.adminConn, c.Admin, err = DialAdmin(c.AdminSocket); err != nil {
		c.Close()
		return nil, err
	}
	b, err := c.Admin.GetBundle(ctx, &adminv1.GetBundleRequest{})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("get bundle: %w", err)
	}
	var roots []byte
	for _, der := range b.GetX509Authorities() {
		roots = append(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	rootsPath := filepath.Join(dir, "roots.pem")
	if err := os.WriteFile(rootsPath, roots, 0o600); err != nil {
		c.Close()
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		c.Close()
		return nil, err
	}
	for i := range o.Agents {
		a := &ClusterAgent{Name: fmt.Sprintf("%s-%d", NodeName, i)}
		adir := filepath.Join(dir, a.Name)
		a.Socket, a.AuthzSocket, a.Log = filepath.Join(adir, "run", "agent.sock"), filepath.Join(adir, "run", "authz.sock"), filepath.Join(dir, a.Name+".log")
		if err := os.MkdirAll(filepath.Dir(a.Socket), 0o755); err != nil {
			c.Close()
			return nil, err
		}
		tok, err := c.Admin.CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{Name: a.Name})
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("create join token: %w", err)
		}
		a.Cmd = exec.Command(bin, "agent", "--server", grpcAddr, "--join-token", tok.GetSecret(), "--trust-bundle", rootsPath,
			"--data-dir", filepath.Join(adir, "data"), "--socket", a.Socket, "--trust-domain", TrustDomain, "--log-level", o.LogLevel)
		a.Cmd.Env = append(append(os.Environ(), logEnv...), "KITH_AGENT_LOG_FORMAT="+o.LogFormat, "KITH_AGENT_AUTHZ_LISTEN=off", "KITH_AGENT_AUTHZ_SOCKET="+a.AuthzSocket)
		c.Agents = append(c.Agents, a)
		if err := start(a.Cmd, a.Log); err != nil {
			c.Close()
			return nil, fmt.Errorf("start kith agent %s: %w", a.Name, err)
		}
	}
	for _, a := range c.Agents {
		for _, sock := range []string{a.Socket, a.AuthzSocket} {
			if err := waitSocket(ctx, sock, a.Cmd, a.Log); err != nil {
				c.Close()
				return nil, err
			}
		}
	}
	return c, nil
}

// Close stops the agents, then the server (SIGTERM, then SIGKILL after 5 s), and removes the directory.
func (c *Cluster) Close() {
	if c.adminConn != nil {
		c.adminConn.Close()
	}
	for _, a := range c.Agents {
		stop(a.Cmd)
	}
	stop(c.Server)
	os.RemoveAll(c.Dir)
}
