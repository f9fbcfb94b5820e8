//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestAttackKillDuringConcurrentWrites kills the server (SIGKILL) while eight writers create entries
// through the CLI, restarts it, and checks that every write the CLI acknowledged (exit 0) is there and that
// the audit chain verifies.
func TestAttackKillDuringConcurrentWrites(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	const writers = 8
	var mu sync.Mutex
	var acked []string
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("spiffe://%s/kill/w%d/%d", c.td.Name(), w, i)
				r := kith(t, c.adminSocket, "entry", "create", "--spiffe-id", id,
					"--node-selector", "join_token:name:node1", "--selector", uidSelector())
				if r.code != 0 {
					return // the server is gone: this write was not acknowledged
				}
				mu.Lock()
				acked = append(acked, id)
				mu.Unlock()
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	c.server.kill()
	close(stop)
	wg.Wait()
	if len(acked) == 0 {
		t.Fatal("no write was acknowledged before the kill: the test proves nothing")
	}

	c.startServer()
	out := mustKith(t, c.adminSocket, "entry", "list", "-o", "json")
	var lost []string
	for _, id := range acked {
		if !strings.Contains(out, `"`+id+`"`) {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Errorf("%d of %d acknowledged writes lost after SIGKILL: %v", len(lost), len(acked), lost)
	}
	t.Logf("%d acknowledged writes from %d writers, all present after SIGKILL and restart", len(acked), writers)
	mustKith(t, c.adminSocket, "audit", "verify")
}
