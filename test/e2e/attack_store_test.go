//go:build e2e

package e2e

import (
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	_ "modernc.org/sqlite"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

// rootFingerprints returns the SHA-256 (hex) of each X.509 root in the server's bundle.
func (c *cluster) rootFingerprints() []string {
	c.t.Helper()
	var out []string
	for _, r := range serverBundle(c.t, c.adminSocket, c.td).X509Authorities() {
		sum := sha256.Sum256(r.Raw)
		out = append(out, hex.EncodeToString(sum[:]))
	}
	return out
}

// serverArgs are the arguments startServer uses, plus extra.
func (c *cluster) serverArgs(extra ...string) []string {
	args := append([]string{"server", "--data-dir", filepath.Join(c.dir, "server"), "--trust-domain", c.td.Name()}, c.extraArgs...)
	return append(args, extra...)
}

func (c *cluster) serverEnv() []string {
	return append([]string{"KITH_LISTEN_GRPC=" + c.grpcAddr, "KITH_LISTEN_HTTP=" + c.httpAddr}, c.extraEnv...)
}

// An empty or deleted kith.db in an initialised data dir used to become a new install with a new CA.
// Now the server refuses to start and says how to restore or re-initialise; --reinit starts over, keeps
// the old keys and records the old root in the new audit log.
func TestAttackLostDatabase(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, db string)
	}{
		{"deleted", func(t *testing.T, db string) {
			for _, f := range []string{db, db + "-wal", db + "-shm"} {
				if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
					t.Fatal(err)
				}
			}
		}},
		{"truncated to 0 bytes", func(t *testing.T, db string) {
			os.Remove(db + "-wal")
			os.Remove(db + "-shm")
			if err := os.Truncate(db, 0); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run("a "+tc.name+" database", func(t *testing.T) {
			t.Parallel()
			c := newCluster(t)
			mustKith(t, c.adminSocket, "entry", "create", "--spiffe-id", "spiffe://e2e.test/before", "--selector", uidSelector(), "--node-selector", "join_token:name:n1")
			oldRoots := c.rootFingerprints()
			if code := c.server.stop(); code != 0 {
				t.Fatalf("server exit %d", code)
			}
			tc.damage(t, filepath.Join(c.dir, "server", "kith.db"))

			refused := start(t, "server (lost db)", c.serverEnv(), c.serverArgs()...)
			if code := refused.wait(20 * time.Second); code == 0 {
				t.Fatal("the server started on an initialised data dir with a lost database")
			}
			for _, want := range []string{"refusing to start", "Restore kith.db from a backup", "kith server --reinit"} {
				if !strings.Contains(refused.stderr.String(), want) {
					t.Errorf("refusal does not say %q:\n%s", want, refused.stderr.String())
				}
			}

			c.server = start(t, "server --reinit", c.serverEnv(), c.serverArgs("--reinit")...)
			c.server.waitOutput("kith server started", 20*time.Second)
			if diff := cmp.Diff(oldRoots, c.rootFingerprints()); diff == "" {
				t.Error("--reinit kept the old root")
			}
			var events adminv1.ListAuditEventsResponse
			kithProto(t, c.adminSocket, &events, "audit", "list", "--oldest-first")
			var detail struct {
				OldRootSHA256 []string `json:"old_root_sha256"`
				MovedTo       string   `json:"moved_to"`
			}
			for _, ev := range events.GetEvents() {
				if ev.GetAction() == "server.reinit" {
					if err := json.Unmarshal([]byte(ev.GetDetail()), &detail); err != nil {
						t.Fatal(err)
					}
				}
			}
			if diff := cmp.Diff(oldRoots, detail.OldRootSHA256); diff != "" {
				t.Errorf("server.reinit audit row: old root fingerprints (-want +got):\n%s", diff)
			}
			if keys, err := os.ReadDir(filepath.Join(detail.MovedTo, "keys")); err != nil || len(keys) == 0 {
				t.Errorf("old keys were not kept aside in %s: %v", detail.MovedTo, err)
			}
		})
	}
}

// kith dev on a persistent --data-dir is the same server: a lost database is refused, --reinit starts over.
func TestAttackDevLostDatabase(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	args := []string{"dev", "--data-dir", dir, "--http", "127.0.0.1:0"}
	dev := start(t, "kith dev", nil, args...)
	dev.waitOutput("Press Ctrl-C", 30*time.Second)
	if code := dev.stop(); code != 0 {
		t.Fatalf("kith dev exit %d", code)
	}
	db := filepath.Join(dir, "server", "kith.db")
	for _, f := range []string{db, db + "-wal", db + "-shm"} {
		os.Remove(f)
	}
	refused := start(t, "kith dev (lost db)", nil, args...)
	if code := refused.wait(20 * time.Second); code == 0 || !strings.Contains(refused.stderr.String(), "--reinit") {
		t.Fatalf("kith dev on a lost database: exit %d, want a refusal naming --reinit:\n%s", code, refused.stderr.String())
	}
	again := start(t, "kith dev --reinit", nil, append(args, "--reinit")...)
	again.waitOutput("Press Ctrl-C", 30*time.Second)
}

// Removing the newest audit rows with sqlite while the server is stopped left a chain that verified
// ("intact"). The signed checkpoint outside the database shows it: the restarted server logs it loudly and
// kith audit verify exits 1.
func TestAttackAuditRowsRemovedFromTheEnd(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	for _, name := range []string{"a", "b", "c"} {
		mustKith(t, c.adminSocket, "entry", "create", "--spiffe-id", "spiffe://e2e.test/"+name, "--selector", uidSelector(), "--node-selector", "join_token:name:n1")
	}
	if code := c.server.stop(); code != 0 {
		t.Fatalf("server exit %d", code)
	}
	db, err := sql.Open("sqlite", filepath.Join(c.dir, "server", "kith.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"DROP TRIGGER audit_no_delete", "DELETE FROM audit WHERE seq > (SELECT max(seq) - 2 FROM audit)"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	c.startServer()
	if !strings.Contains(c.server.stderr.String(), "AUDIT LOG TAMPERED OR DAMAGED") {
		t.Errorf("the restarted server did not log the removal:\n%s", c.server.stderr.String())
	}
	r := kith(t, c.adminSocket, "audit", "verify")
	if r.code != 1 || !strings.Contains(r.stderr, "removed from the end") {
		t.Errorf("kith audit verify: exit %d, stderr %q; want exit 1 naming the removed events", r.code, r.stderr)
	}
}
