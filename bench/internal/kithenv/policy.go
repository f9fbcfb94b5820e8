package kithenv

import (
	"context"
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
	bin, dir, err := prepare(o.Bin)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, AdminSocket: filepath.Join(dir, "server", "admin.sock"), ServerLog: filepath.Join(dir, "server.log")}
	if c.HTTPAddr, err = freeAddr(); err != nil {
		c.Close()
		return nil, err
	}
	logEnv := []string{"KITH_LOG_FORMAT=" + o.LogFormat}
	srv, err := startServer(ctx, bin, dir, o.LogLevel, c.HTTPAddr, append(logEnv, o.ServerEnv...))
	c.Server, c.adminConn, c.Admin = srv.cmd, srv.conn, srv.admin
	if err != nil {
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
		a.Cmd = agentCommand(bin, srv.grpcAddr, tok.GetSecret(), srv.roots, filepath.Join(adir, "data"), a.Socket, o.LogLevel,
			append(logEnv, "KITH_AGENT_LOG_FORMAT="+o.LogFormat, "KITH_AGENT_AUTHZ_LISTEN=off", "KITH_AGENT_AUTHZ_SOCKET="+a.AuthzSocket)...)
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
