//go:build e2e

package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// TestDev runs `kith dev` and uses it as its quickstart says: register this process, get an X.509-SVID
// over the Workload API, and check JWT-SVIDs both ways between the CLI and the agent.
func TestDev(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	dev := start(t, "kith dev", nil, "dev", "--data-dir", dir, "--http", "127.0.0.1:0")
	dev.waitOutput("Press Ctrl-C", 30*time.Second)

	socket := filepath.Join(dir, "agent.sock")
	admin := filepath.Join(dir, "admin.sock")
	t.Run("it prints where the sockets are and who the dev agent is", func(t *testing.T) {
		out := dev.stdout.String()
		for _, want := range []string{
			"export SPIFFE_ENDPOINT_SOCKET=unix://" + socket + "\n",
			"export KITH_ADMIN_SOCKET=" + admin + "\n",
			"Dev agent: spiffe://kith.test/kith/agent/join_token/dev ",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("kith dev output lacks %q:\n%s", want, out)
			}
		}
	})

	td := spiffeid.RequireTrustDomainFromString("kith.test")
	me := spiffeid.RequireFromPath(td, "/e2e/me")
	mustKith(t, admin, "entry", "create", "--spiffe-id", me.String(), "--selector", uidSelector())

	t.Run("an entry for this uid reaches the workload and verifies against the bundle", func(t *testing.T) {
		svid := waitSVID(t, socket, me)
		id, _, err := x509svid.Verify(svid.Certificates, serverBundle(t, admin, td))
		if err != nil {
			t.Fatalf("workload svid does not verify against kith bundle show: %v", err)
		}
		if diff := cmp.Diff(me.String(), id.String()); diff != "" {
			t.Errorf("verified id (-want +got):\n%s", diff)
		}
	})

	addr := workloadapi.WithAddr("unix://" + socket)
	t.Run("a jwt-svid minted with the cli validates through the agent", func(t *testing.T) {
		other := spiffeid.RequireFromPath(td, "/e2e/other")
		token := strings.TrimSpace(mustKith(t, admin, "svid", "mint", "jwt", "--spiffe-id", other.String(), "--audience", "e2e-aud"))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		svid, err := workloadapi.ValidateJWTSVID(ctx, token, "e2e-aud", addr)
		if err != nil {
			t.Fatalf("ValidateJWTSVID: %v", err)
		}
		if diff := cmp.Diff(other.String(), svid.ID.String()); diff != "" {
			t.Errorf("validated id (-want +got):\n%s", diff)
		}
		if _, err := workloadapi.ValidateJWTSVID(ctx, token, "someone-else", addr); err == nil {
			t.Errorf("ValidateJWTSVID accepted the token for an audience it was not minted for")
		}
	})

	t.Run("a jwt-svid from the agent verifies with the cli", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		svid, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "e2e-api", Subject: me}, addr)
		if err != nil {
			t.Fatalf("FetchJWTSVID: %v", err)
		}
		out := mustKith(t, admin, "svid", "verify", "--jwt", svid.Marshal(), "--audience", "e2e-api")
		if !strings.Contains(out, "valid JWT-SVID for "+me.String()) {
			t.Errorf("kith svid verify --jwt: %s", out)
		}
	})

	t.Run("a proxy gets its certificate and the trust bundle over sds", func(t *testing.T) {
		cert, roots := fetchSDS(t, socket)
		if diff := cmp.Diff(me.String(), cert); diff != "" {
			t.Errorf("default secret's leaf URI SAN (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"kith.test"}, roots); diff != "" {
			t.Errorf("ROOTCA trust domains (-want +got):\n%s", diff)
		}
	})

	t.Run("SIGTERM stops it with exit code 0", func(t *testing.T) {
		if code := dev.stop(); code != 0 {
			t.Errorf("kith dev exit code %d, want 0", code)
		}
	})
}
