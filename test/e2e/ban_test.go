//go:build e2e

package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

// TestRevokeAndBan runs the real binaries: a revoked token joins nothing; a banned agent is evicted and
// refused even with a fresh token for its name, until it is unbanned.
func TestRevokeAndBan(t *testing.T) {
	t.Parallel()
	c := newCluster(t)

	t.Run("an agent with a revoked token is refused", func(t *testing.T) {
		var resp adminv1.CreateJoinTokenResponse
		kithProto(t, c.adminSocket, &resp, "token", "create", "--name", "revoked", "--ttl", "10m")
		mustKith(t, c.adminSocket, "token", "revoke", resp.GetToken().GetId())
		a := c.startAgent("revoked", resp.GetSecret())
		if code := a.wait(20 * time.Second); code == 0 {
			t.Fatalf("agent with a revoked token exited 0")
		}
		if !strings.Contains(a.stderr.String(), "join token") {
			t.Errorf("agent's error does not mention the join token:\n%s", lastLines(a.stderr.String(), 3))
		}
	})

	agentID := spiffeid.RequireFromPath(c.td, "/kith/agent/join_token/node1").String()
	agent := c.startAgent("node1", c.joinToken("node1"))
	agent.waitOutput("kith agent started", 20*time.Second)
	if diff := cmp.Diff("1\n", mustKith(t, c.adminSocket, "agents", "count")); diff != "" {
		t.Errorf("kith agents count (-want +got):\n%s", diff)
	}

	out := mustKith(t, c.adminSocket, "agents", "ban", agentID)
	if diff := cmp.Diff("banned "+agentID+"\n", out); diff != "" {
		t.Errorf("kith agents ban (-want +got):\n%s", diff)
	}
	agent.waitOutput("server refused this agent", 15*time.Second)
	agent.stop()
	var list adminv1.ListAgentsResponse
	kithProto(t, c.adminSocket, &list, "agents", "list")
	if len(list.GetAgents()) != 1 || !list.GetAgents()[0].GetBanned() || !list.GetAgents()[0].GetEvicted() {
		t.Errorf("kith agents list after ban = %v, want the agent banned and evicted", list.GetAgents())
	}

	fresh := c.joinToken("node1") // the name is free: its agent is evicted
	t.Run("a banned agent is refused with a fresh token for its name", func(t *testing.T) {
		a := c.startAgent("node1-again", fresh)
		if code := a.wait(20 * time.Second); code == 0 {
			t.Fatalf("banned agent exited 0")
		}
	})

	t.Run("once unbanned it joins with that token", func(t *testing.T) {
		mustKith(t, c.adminSocket, "agents", "unban", agentID)
		a := c.startAgent("node1-unbanned", fresh)
		a.waitOutput("kith agent started", 20*time.Second)
		a.stop()
	})
}
