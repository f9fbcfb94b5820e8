//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestAttackAgentOnAFullDisk runs a standalone agent whose data directory is a 1 MiB filesystem, fills it,
// and shows that the agent goes on serving (old and new identities), says why it cannot save, keeps its last
// good state file whole, and restarts from it while the disk is still full.
func TestAttackAgentOnAFullDisk(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a 1 MiB tmpfs as the agent's data directory, which needs root (CAP_SYS_ADMIN): run make test as root, as CI does")
	}
	c := newCluster(t)
	d := c.agentDirs("node1")
	if err := os.MkdirAll(d.data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", d.data, "tmpfs", 0, "size=1m,mode=0700"); err != nil {
		t.Fatalf("mount a small tmpfs at %s: %v", d.data, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(d.data, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", d.data, err)
		}
	})

	agent := c.startAgent("node1", c.joinToken("node1"))
	agent.waitOutput("kith agent started", 20*time.Second)
	before := spiffeid.RequireFromPath(c.td, "/e2e/before-full")
	mustKith(t, c.adminSocket, "entry", "create", "--spiffe-id", before.String(),
		"--node-selector", "join_token:name:node1", "--selector", uidSelector())
	waitSVID(t, d.socket, before)
	statePath := filepath.Join(d.data, "state.json")
	eventually(t, 10*time.Second, "the state names "+before.String(), func() error {
		b, err := os.ReadFile(statePath)
		if err != nil {
			return err
		}
		if !bytes.Contains(b, []byte(before.String())) {
			return errors.New("not yet")
		}
		return nil
	})

	fill(t, filepath.Join(d.data, "filler"))

	after := spiffeid.RequireFromPath(c.td, "/e2e/after-full")
	mustKith(t, c.adminSocket, "entry", "create", "--spiffe-id", after.String(),
		"--node-selector", "join_token:name:node1", "--selector", uidSelector())
	t.Run("a new identity is served although it cannot be saved", func(t *testing.T) {
		waitSVID(t, d.socket, after)
		if _, _, err := fetchSVID(d.socket, before); err != nil {
			t.Errorf("the identity from before the disk filled: %v", err)
		}
	})
	t.Run("the agent says why it cannot save", func(t *testing.T) {
		agent.waitOutput("no space left on device", 15*time.Second)
	})
	t.Run("the last good state is whole and no temp file is left", func(t *testing.T) {
		checkStateFile(t, statePath, before.String())
		left, _ := filepath.Glob(filepath.Join(d.data, ".state.json.tmp-*"))
		if len(left) != 0 {
			t.Errorf("temp files left on the full disk: %v", left)
		}
	})
	t.Run("restarted on the still full disk it serves from its last state", func(t *testing.T) {
		agent.stop()
		checkStateFile(t, statePath, before.String())
		agent = c.startAgent("node1", "")
		agent.waitOutput("kith agent started", 20*time.Second)
		agent.waitOutput("restored agent state", time.Second)
		waitSVID(t, d.socket, before)
		waitSVID(t, d.socket, after) // from the server again
	})
}

// fill writes path until the filesystem is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", path, err)
			}
			return
		}
	}
}

// checkStateFile checks that every line of the agent's state file is JSON and that it names want.
func checkStateFile(t *testing.T, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if !json.Valid([]byte(line)) {
			t.Fatalf("state file line %d is not JSON (torn write?): %.80q", i+1, line)
		}
	}
	if !strings.Contains(string(b), want) {
		t.Errorf("state file lost %s", want)
	}
}
