//go:build e2e && postgres

package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/internal/store/postgres/pgtest"
)

// haClusters starts one throwaway PostgreSQL and n servers on one database of it, sharing the CA keys
// through the database key manager (one KEK file for all).
func haClusters(t *testing.T, n int) ([]*cluster, *pgtest.Cluster) {
	t.Helper()
	pg := pgtest.Start(t, pgtest.Options{})
	url := pg.NewDatabase(t)
	kek := filepath.Join(shortTempDir(t), "kek")
	secret := make([]byte, 32)
	rand.Read(secret)
	if err := os.WriteFile(kek, []byte(base64.StdEncoding.EncodeToString(secret)), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"KITH_STORE_URL=" + url, "KITH_CA_KEK_FILE=" + kek}
	out := make([]*cluster, n)
	for i := range out {
		out[i] = newClusterEnv(t, env...)
	}
	return out, pg
}

// TestPostgresGrantOnOneServerEnforcedByAnotherServersAgent: servers A and B on one PostgreSQL; an agent
// joins B with a token made on A, gets the SVIDs of entries made on A (signed by the CA both share), and
// enforces a grant made on A within milliseconds of it being committed.
func TestPostgresGrantOnOneServerEnforcedByAnotherServersAgent(t *testing.T) {
	servers, _ := haClusters(t, 2)
	a, b := servers[0], servers[1]
	if ab, bb := mustKith(t, a.adminSocket, "bundle", "show", "--format", "pem"), mustKith(t, b.adminSocket, "bundle", "show", "--format", "pem"); ab != bb {
		t.Fatalf("servers A and B publish different bundles:\nA:\n%s\nB:\n%s", ab, bb)
	}
	token := a.joinToken("node1")
	agent := b.startAgent("node1", token)
	agent.waitOutput("kith agent started", 20*time.Second)

	caller := spiffeid.RequireFromPath(a.td, "/e2e/frontend")
	target := spiffeid.RequireFromPath(a.td, "/e2e/payments")
	for _, id := range []spiffeid.ID{caller, target} {
		mustKith(t, a.adminSocket, "entry", "create", "--spiffe-id", id.String(),
			"--node-selector", "join_token:name:node1", "--selector", uidSelector())
	}
	waitSVID(t, b.agentDirs("node1").socket, target)
	allowed := func() bool {
		ok, err := authzAllowed(b.authzSocket("node1"), caller, target, "GET", "/api/x")
		if err != nil {
			t.Fatalf("ext_authz check on the agent of server B: %v", err)
		}
		return ok
	}
	if allowed() {
		t.Fatal("frontend → payments is allowed before any grant")
	}
	mustKith(t, a.adminSocket, "grant", "frontend", "payments")
	granted := time.Now()
	for !allowed() {
		if time.Since(granted) > 10*time.Second {
			t.Fatal("the agent of server B does not enforce the grant made on server A 10 s later")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("grant on server A enforced by the agent of server B %s after the CLI returned", time.Since(granted).Round(time.Millisecond))
}
