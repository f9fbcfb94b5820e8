//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestActivityShowsHeldSVIDsAndDecisionsPerCaller: the agent reports the SVIDs it holds and its ext_authz
// decisions per caller; kith activity shows, for the target, the agent holding its SVID (with the serial and
// expiry of the SVID the workload fetched) and the allowed and denied counts of each caller.
func TestActivityShowsHeldSVIDsAndDecisionsPerCaller(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	agent := c.startAgentEnv("node1", c.joinToken("node1"), "KITH_AGENT_RETRY_MAX=1s", "KITH_AGENT_ACTIVITY_REPORT_EVERY=1s")
	agent.waitOutput("kith agent started", 20*time.Second)
	frontend, reports, payments := spiffeid.RequireFromPath(c.td, "/e2e/frontend"), spiffeid.RequireFromPath(c.td, "/e2e/reports"), spiffeid.RequireFromPath(c.td, "/e2e/payments")
	mustKith(t, c.adminSocket, "entry", "create", "--spiffe-id", payments.String(), "--node-selector", "join_token:name:node1", "--selector", uidSelector())
	svid := waitSVID(t, c.agentDirs("node1").socket, payments)
	mustKith(t, c.adminSocket, "grant", frontend.String(), payments.String(), "--wait=10s")
	for _, call := range []struct {
		caller spiffeid.ID
		want   bool
	}{{frontend, true}, {frontend, true}, {frontend, true}, {reports, false}, {reports, false}} {
		ok, err := authzAllowed(c.authzSocket("node1"), call.caller, payments, "GET", "/api/x")
		if err != nil || ok != call.want {
			t.Fatalf("ext_authz %s → %s: %v, %v; want %v", call.caller, payments, ok, err, call.want)
		}
	}

	type activity struct {
		SVIDs []struct {
			Agent, Entry, Serial string
			ExpiresAt            time.Time `json:"expires_at"`
		} `json:"svids"`
		Callers []struct {
			Caller          string
			Allowed, Denied uint64
		} `json:"callers"`
		AgentsReporting int `json:"agents_reporting"`
	}
	agentID := spiffeid.RequireFromPath(c.td, "/kith/agent/join_token/node1").String()
	var got activity
	eventually(t, 15*time.Second, "kith activity shows the decisions", func() error {
		got = activity{}
		if err := json.Unmarshal([]byte(mustKith(t, c.adminSocket, "activity", "payments", "-o", "json")), &got); err != nil {
			return err
		}
		if len(got.Callers) != 2 || got.Callers[0].Caller != frontend.String() || got.Callers[0].Allowed != 3 ||
			got.Callers[1].Caller != reports.String() || got.Callers[1].Denied != 2 {
			return fmt.Errorf("callers %+v, want frontend allowed 3, then reports denied 2", got.Callers)
		}
		return nil
	})
	if len(got.SVIDs) != 1 || got.SVIDs[0].Agent != agentID || got.SVIDs[0].Serial != svid.Certificates[0].SerialNumber.Text(16) ||
		!got.SVIDs[0].ExpiresAt.Equal(svid.Certificates[0].NotAfter) {
		t.Errorf("svids %+v, want the one the workload fetched (serial %s, expires %s) held by %s", got.SVIDs,
			svid.Certificates[0].SerialNumber.Text(16), svid.Certificates[0].NotAfter, agentID)
	}
	if got.AgentsReporting != 1 {
		t.Errorf("agents_reporting = %d, want 1", got.AgentsReporting)
	}
	if out := mustKith(t, c.adminSocket, "activity", "spiffe://e2e.test/e2e/nobody"); !strings.Contains(out, "No agent connected to this server has reported") {
		t.Errorf("kith activity of an identity nobody holds = %q", out)
	}
}
