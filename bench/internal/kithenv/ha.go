package kithenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"google.golang.org/grpc"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

// HAServer is one `kith server` of an HA environment.
type HAServer struct {
	Dir      string
	GRPCAddr string
	Admin    adminv1.AdminServiceClient
	Cmd      *exec.Cmd

	conn *grpc.ClientConn
	env  []string
}

// HA is several `kith server` processes on one store (PostgreSQL, or SQLite for one server) and an agent
// that knows them all.
type HA struct {
	Dir         string
	Servers     []*HAServer
	AgentSocket string
	Agent       *exec.Cmd

	bin, logLevel string
}

// HAOptions tune StartHA.
type HAOptions struct {
	Bin     string   // the kith binary; required
	Servers int      // how many; zero: 1
	Env     []string // added to every server's environment (KITH_STORE_URL, KITH_CA_KEK_FILE)
	// AgentServers: the agent is given every server (true) or only the last one (false); NoAgent: none.
	AgentServers, NoAgent bool
}

// StartHA starts the servers one after the other on o.Env's store and an agent joined through the first.
func StartHA(ctx context.Context, o HAOptions) (*HA, error) {
	if o.Servers == 0 {
		o.Servers = 1
	}
	bin, dir, err := prepare(o.Bin)
	if err != nil {
		return nil, err
	}
	h := &HA{Dir: dir, AgentSocket: filepath.Join(dir, "agent.sock"), bin: bin, logLevel: "info"}
	var roots string
	for i := range o.Servers {
		sd := filepath.Join(dir, fmt.Sprintf("s%d", i))
		if err := os.MkdirAll(sd, 0o755); err != nil {
			h.Close()
			return nil, err
		}
		// Each server is one of its own (its own intermediate), named as in a StatefulSet.
		env := append(slices.Clone(o.Env), fmt.Sprintf("KITH_SERVER_NAME=kith-%d", i))
		srv, err := startServer(ctx, bin, sd, h.logLevel, "127.0.0.1:0", env)
		h.Servers = append(h.Servers, &HAServer{Dir: sd, GRPCAddr: srv.grpcAddr, Admin: srv.admin, Cmd: srv.cmd, conn: srv.conn, env: env})
		if err != nil {
			h.Close()
			return nil, err
		}
		roots = srv.roots
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		h.Close()
		return nil, err
	}
	if o.NoAgent {
		return h, nil
	}
	tok, err := h.Servers[0].Admin.CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{Name: NodeName})
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("create join token: %w", err)
	}
	addrs := []string{h.Servers[len(h.Servers)-1].GRPCAddr}
	if o.AgentServers {
		addrs = addrs[:0]
		for _, s := range h.Servers {
			addrs = append(addrs, s.GRPCAddr)
		}
	}
	h.Agent = agentCommand(bin, strings.Join(addrs, ","), tok.GetSecret(), roots, filepath.Join(dir, "agent"), h.AgentSocket, h.logLevel,
		"KITH_AGENT_AUTHZ_LISTEN=off", "KITH_AGENT_RETRY_MAX=1s")
	if err := start(h.Agent, filepath.Join(dir, "agent.log")); err != nil {
		h.Close()
		return nil, fmt.Errorf("start kith agent: %w", err)
	}
	if err := waitSocket(ctx, h.AgentSocket, h.Agent, filepath.Join(dir, "agent.log")); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// Kill sends server i SIGKILL and waits for it.
func (h *HA) Kill(i int) {
	s := h.Servers[i]
	s.Cmd.Process.Kill()
	s.Cmd.Wait()
	s.conn.Close()
}

// Restart starts server i again on its address and data dir.
func (h *HA) Restart(ctx context.Context, i int) error {
	s := h.Servers[i]
	os.Remove(filepath.Join(s.Dir, "server", "admin.sock"))
	cmd := exec.Command(h.bin, "server", "--data-dir", filepath.Join(s.Dir, "server"), "--trust-domain", TrustDomain, "--log-level", h.logLevel)
	cmd.Env = append(append(os.Environ(), "KITH_LISTEN_GRPC="+s.GRPCAddr, "KITH_LISTEN_HTTP=127.0.0.1:0"), s.env...)
	logPath := filepath.Join(s.Dir, "server.log")
	if err := start(cmd, logPath); err != nil {
		return err
	}
	s.Cmd = cmd
	if err := waitSocket(ctx, filepath.Join(s.Dir, "server", "admin.sock"), cmd, logPath); err != nil {
		return err
	}
	var err error
	s.conn, s.Admin, err = DialAdmin(filepath.Join(s.Dir, "server", "admin.sock"))
	return err
}

// AgentLog is what the agent logged so far.
func (h *HA) AgentLog() string {
	b, _ := os.ReadFile(filepath.Join(h.Dir, "agent.log"))
	return string(b)
}

// Close stops every process and removes the directory.
func (h *HA) Close() {
	if h.Agent != nil {
		stop(h.Agent)
	}
	for _, s := range h.Servers {
		if s.conn != nil {
			s.conn.Close()
		}
		if s.Cmd != nil {
			stop(s.Cmd)
		}
	}
	os.RemoveAll(h.Dir)
}
