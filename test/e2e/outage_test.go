//go:build e2e

package e2e

import (
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestServerOutage kills the server and shows that workloads keep their identities, even across an agent
// restart during the outage, and that the agent catches up once the server is back.
func TestServerOutage(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	agent := c.startAgent("node1", c.joinToken("node1"))
	agent.waitOutput("kith agent started", 20*time.Second)
	socket := c.agentDirs("node1").socket

	before := spiffeid.RequireFromPath(c.td, "/e2e/before-outage")
	mustKith(t, c.adminSocket, "entry", "create", "--spiffe-id", before.String(),
		"--node-selector", "join_token:name:node1", "--selector", uidSelector())
	waitSVID(t, socket, before)

	c.server.kill()

	t.Run("with the server killed the workload still gets its svid", func(t *testing.T) {
		if _, _, err := fetchSVID(socket, before); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("an agent restarted during the outage still serves from its persisted state", func(t *testing.T) {
		if code := agent.stop(); code != 0 {
			t.Errorf("agent exit code on SIGTERM %d, want 0", code)
		}
		agent = c.startAgent("node1", "") // no --join-token: it must restore its state
		agent.waitOutput("kith agent started", 20*time.Second)
		agent.waitOutput("restored agent state", time.Second)
		if _, _, err := fetchSVID(socket, before); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("once the server is back a new entry reaches the workload", func(t *testing.T) {
		c.startServer()
		after := spiffeid.RequireFromPath(c.td, "/e2e/after-outage")
		mustKith(t, c.adminSocket, "entry", "create", "--spiffe-id", after.String(),
			"--node-selector", "join_token:name:node1", "--selector", uidSelector())
		waitSVID(t, socket, after)
		if _, _, err := fetchSVID(socket, before); err != nil {
			t.Errorf("the entry from before the outage: %v", err)
		}
	})
}
