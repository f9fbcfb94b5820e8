//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestAttackHungPolicyRemote starts a server whose policy repository is a port that accepts connections and
// never answers: the server starts and is healthy, admin commands answer while syncs hang, and each sync
// ends at policy.git.timeout with the reason in `kith policy status`.
func TestAttackHungPolicyRemote(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})

	dir := shortTempDir(t)
	httpAddr := freeAddr(t)
	admin := filepath.Join(dir, "server", "admin.sock")
	server := start(t, "server", []string{"KITH_LISTEN_GRPC=" + freeAddr(t), "KITH_LISTEN_HTTP=" + httpAddr,
		"KITH_POLICY_GIT_URL=https://" + l.Addr().String() + "/policy.git", "KITH_POLICY_GIT_TIMEOUT=2s"},
		"server", "--data-dir", filepath.Join(dir, "server"), "--trust-domain", "e2e.test")
	server.waitOutput("kith server started", 20*time.Second)

	t.Run("the server is healthy and answers while the sync hangs", func(t *testing.T) {
		resp, err := http.Get("http://" + httpAddr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("/healthz %d", resp.StatusCode)
		}
		start := time.Now()
		mustKith(t, admin, "entry", "list")
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("kith entry list took %s while the policy sync hung", d)
		}
	})
	t.Run("the sync ends at the timeout and says why", func(t *testing.T) {
		server.waitOutput("policy.git.timeout 2s", 15*time.Second)
		eventually(t, 10*time.Second, "policy status names the timeout", func() error {
			out := mustKith(t, admin, "policy", "status")
			if !strings.Contains(out, "policy.git.timeout") {
				return fmt.Errorf("policy status:\n%s", out)
			}
			return nil
		})
	})
}
