//go:build e2e

package e2e

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestAttackRevokeAfterOutageReachesAgentWithinSeconds: the server is down long enough for the agent's
// reconnect backoff to grow (it reached 30 s plus jitter before: a revoke made after the outage reached the
// agent 31 s, up to ≈ 45 s, later); once the server is back, a revoke must be enforced by the agent within
// seconds, and kith revoke --wait must say so.
func TestAttackRevokeAfterOutageReachesAgentWithinSeconds(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	agent := c.startAgentEnv("node1", c.joinToken("node1")) // the default reconnect backoff
	agent.waitOutput("kith agent started", 20*time.Second)

	caller := spiffeid.RequireFromPath(c.td, "/e2e/frontend")
	target := spiffeid.RequireFromPath(c.td, "/e2e/payments")
	for _, id := range []spiffeid.ID{caller, target} {
		mustKith(t, c.adminSocket, "entry", "create", "--spiffe-id", id.String(),
			"--node-selector", "join_token:name:node1", "--selector", uidSelector())
	}
	waitSVID(t, c.agentDirs("node1").socket, target)
	out := mustKith(t, c.adminSocket, "grant", "frontend", "payments", "--wait=10s")
	if !strings.Contains(out, "enforced by all 1 agents that must enforce it") {
		t.Errorf("kith grant --wait = %q, want it enforced by the one agent", out)
	}
	allowed := func() bool {
		ok, err := authzAllowed(c.authzSocket("node1"), caller, target, "GET", "/api/x")
		if err != nil {
			t.Fatalf("ext_authz check: %v", err)
		}
		return ok
	}
	if !allowed() {
		t.Fatal("frontend → payments is denied right after the grant was acknowledged")
	}

	c.server.kill()
	const outage = 15 * time.Second // the old backoff reached 6.4 s (plus jitter) by then, and kept doubling
	time.Sleep(outage)
	c.startServer()
	back := time.Now()

	res := kith(t, c.adminSocket, "revoke", "frontend", "payments", "--wait=10s")
	if res.code != 0 || !strings.Contains(res.stdout, "enforced by all 1 agents that must enforce it") {
		t.Errorf("kith revoke --wait=10s after the outage: exit %d, %q %q; want it enforced by the one agent", res.code, res.stdout, res.stderr)
	}
	for allowed() {
		if time.Since(back) > 10*time.Second {
			t.Fatalf("the agent still allows frontend → payments %s after the server came back and the grant was revoked", time.Since(back).Round(time.Millisecond))
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(back)
	t.Logf("revoke enforced %s after the server came back from a %s outage", took.Round(time.Millisecond), outage)

	// Every wait the agent logged is within the cap (5 s), jitter included.
	waits := regexp.MustCompile(`retry_in=([0-9.]+m?s)`).FindAllStringSubmatch(agent.stdout.String()+agent.stderr.String(), -1)
	if len(waits) < 5 {
		t.Fatalf("the agent logged %d reconnect waits during a %s outage, want several", len(waits), outage)
	}
	for _, w := range waits {
		d, err := time.ParseDuration(w[1])
		if err != nil {
			t.Fatalf("retry_in=%s: %v", w[1], err)
		}
		if d > 5*time.Second {
			t.Errorf("the agent waited %s between reconnect attempts, more than the 5 s cap", d)
		}
	}
}
