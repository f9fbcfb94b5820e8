//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

// agentRow is what `kith agents list` says about one agent.
type agentRow struct {
	Type      string
	Connected bool
	Evicted   bool
}

func listAgents(t *testing.T, admin string) map[string]agentRow {
	t.Helper()
	var resp adminv1.ListAgentsResponse
	kithProto(t, admin, &resp, "agents", "list")
	rows := map[string]agentRow{}
	for _, a := range resp.GetAgents() {
		rows[a.GetId()] = agentRow{Type: a.GetAttestationType(), Connected: a.GetConnected(), Evicted: a.GetEvicted()}
	}
	return rows
}

// TestServerAndAgent runs `kith server` and `kith agent` as separate processes: join with a token,
// serve an entry targeted by node selector, evict, refuse a reused token, and shut down gracefully.
func TestServerAndAgent(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	token := c.joinToken("node1")
	agent := c.startAgent("node1", token)
	agent.waitOutput("kith agent started", 20*time.Second)
	agentID := spiffeid.RequireFromPath(c.td, "/kith/agent/join_token/node1").String()

	t.Run("the agent attests with the join token and kith agents list shows it connected", func(t *testing.T) {
		want := agentRow{Type: "join_token", Connected: true}
		eventually(t, 10*time.Second, "agent connected", func() error {
			if diff := cmp.Diff(want, listAgents(t, c.adminSocket)[agentID]); diff != "" {
				return fmt.Errorf("kith agents list, %s (-want +got):\n%s", agentID, diff)
			}
			return nil
		})
	})

	t.Run("a workload no entry matches is refused with PermissionDenied", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+c.agentDirs("node1").socket))
		if diff := cmp.Diff(codes.PermissionDenied, status.Code(err)); diff != "" {
			t.Errorf("FetchX509SVID error %v (-want +got code):\n%s", err, diff)
		}
	})

	wl := spiffeid.RequireFromPath(c.td, "/e2e/node1-workload")
	mustKith(t, c.adminSocket, "entry", "create", "--spiffe-id", wl.String(),
		"--node-selector", "join_token:name:node1", "--selector", uidSelector())
	t.Run("an entry with --node-selector join_token:name:node1 reaches the workload", func(t *testing.T) {
		waitSVID(t, c.agentDirs("node1").socket, wl)
	})

	t.Run("reusing the join token for a second agent fails with a clear error", func(t *testing.T) {
		second := c.startAgent("node2", token)
		code := second.wait(20 * time.Second)
		if code == 0 {
			t.Fatalf("second agent with a used join token exited 0")
		}
		stderr := second.stderr.String()
		t.Logf("second agent: exit %d, %s", code, strings.TrimSpace(stderr))
		if !strings.Contains(stderr, "join token") || !strings.Contains(strings.ToLower(stderr), "used") {
			t.Errorf("second agent's error does not say the join token was used:\n%s", stderr)
		}
	})

	t.Run("an evicted agent logs that the server refused it", func(t *testing.T) {
		out := mustKith(t, c.adminSocket, "agents", "evict", agentID)
		if diff := cmp.Diff("evicted "+agentID+"\n", out); diff != "" {
			t.Errorf("kith agents evict (-want +got):\n%s", diff)
		}
		agent.waitOutput("server refused this agent", 15*time.Second)
		t.Logf("agent log after evict:\n%s", lastLines(agent.stderr.String(), 3))
		if diff := cmp.Diff(agentRow{Type: "join_token", Evicted: true}, listAgents(t, c.adminSocket)[agentID]); diff != "" {
			t.Errorf("kith agents list after evict (-want +got):\n%s", diff)
		}
	})

	t.Run("SIGTERM makes the agent and the server exit 0", func(t *testing.T) {
		if code := agent.stop(); code != 0 {
			t.Errorf("agent exit code %d, want 0", code)
		}
		if code := c.server.stop(); code != 0 {
			t.Errorf("server exit code %d, want 0", code)
		}
	})
}
