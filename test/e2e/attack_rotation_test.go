//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// The server killed with SIGKILL while a CA rotation runs (before, during or after its keys are written
// and its transaction commits): each restart must find every key its authorities need, mint SVIDs that
// verify against the bundle, and the agent's workload must keep getting SVIDs that verify.
func TestAttackCARotationKilled(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	agent := c.startAgent("node1", c.joinToken("node1"))
	agent.waitOutput("kith agent started", 20*time.Second)
	socket := c.agentDirs("node1").socket
	wl := spiffeid.RequireFromPath(c.td, "/e2e/rotated")
	mustKith(t, c.adminSocket, "entry", "create", "--spiffe-id", wl.String(),
		"--node-selector", "join_token:name:node1", "--selector", uidSelector())
	waitSVID(t, socket, wl)

	for i, delay := range []time.Duration{0, 1 * time.Millisecond, 3 * time.Millisecond, 6 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond} {
		args := []string{"ca", "rotate"}
		if i%2 == 0 {
			args = append(args, "--root")
		}
		t.Run(fmt.Sprintf("kill -9 %s into `kith %v`", delay, args), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			rotate := exec.CommandContext(ctx, kithBin(t), args...)
			rotate.Env = append(os.Environ(), "KITH_ADMIN_SOCKET="+c.adminSocket)
			if err := rotate.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(delay)
			c.server.kill()
			_ = rotate.Wait() // it may have finished, failed or been cut off: all are fine

			c.startServer() // fails the test if the server does not start (a lost key refuses it)
			out := filepath.Join(c.dir, fmt.Sprintf("mint-%d", i))
			mustKith(t, c.adminSocket, "svid", "mint", "x509", "--spiffe-id", "spiffe://e2e.test/minted",
				"--out-key", out+".key", "--out-cert", out+".pem")
			svid, err := x509svid.Load(out+".pem", out+".key")
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := x509svid.Verify(svid.Certificates, serverBundle(t, c.adminSocket, c.td)); err != nil {
				t.Errorf("an svid minted after the restart does not verify against the bundle: %v", err)
			}
		})
	}
	t.Run("the workload's svid verifies against the server's bundle after all that", func(t *testing.T) {
		mustKith(t, c.adminSocket, "ca", "rotate") // a new intermediate: the agent must pick it up
		eventually(t, 30*time.Second, "a workload svid that verifies against the server's bundle", func() error {
			s, _, err := fetchSVID(socket, wl)
			if err != nil {
				return err
			}
			_, _, err = x509svid.Verify(s.Certificates, serverBundle(t, c.adminSocket, c.td))
			return err
		})
	})
	t.Run("the audit log is intact", func(t *testing.T) {
		mustKith(t, c.adminSocket, "audit", "verify")
	})
}
