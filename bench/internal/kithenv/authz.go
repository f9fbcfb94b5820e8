package kithenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"
)

// AuthzSocket is the agent's Envoy ext_authz socket: authz.sock next to its Workload API socket, the
// agent's default (StartProcesses turns off only the TCP listener).
func (p *Processes) AuthzSocket() string {
	return filepath.Join(filepath.Dir(p.AgentSocket), "authz.sock")
}

// WaitAuthz waits until the agent accepts connections on AuthzSocket.
func (p *Processes) WaitAuthz(ctx context.Context) error {
	if p.Agent != nil {
		return waitSocket(ctx, p.AuthzSocket(), p.Agent, filepath.Join(p.Dir, "agent.log"))
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		conn, err := net.Dial("unix", p.AuthzSocket())
		if err == nil {
			return conn.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("agent ext_authz socket %s: %w", p.AuthzSocket(), errors.Join(err, ctx.Err()))
		case <-time.After(20 * time.Millisecond):
		}
	}
}
