//go:build e2e && postgres

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"

	"github.com/kithid/kith/internal/store/postgres/pgtest"
)

// haClusters starts one throwaway PostgreSQL and n servers on one database of it, sharing the CA keys
// through the database key manager (one KEK file for all).
func haClusters(t *testing.T, n int) ([]*cluster, *pgtest.Cluster) {
	t.Helper()
	env, pg := haEnv(t)
	out := make([]*cluster, n)
	for i := range out {
		// Each server is a server of its own (its own intermediate), named as in a StatefulSet.
		out[i] = newClusterEnv(t, append(env, fmt.Sprintf("KITH_SERVER_NAME=kith-%d", i))...)
	}
	return out, pg
}

// haEnv starts a throwaway PostgreSQL and returns the environment of servers sharing one database of it:
// its URL and a KEK file.
func haEnv(t *testing.T) ([]string, *pgtest.Cluster) {
	t.Helper()
	pg := pgtest.Start(t, pgtest.Options{})
	url := pg.NewDatabase(t)
	kek := filepath.Join(shortTempDir(t), "kek")
	secret := make([]byte, 32)
	rand.Read(secret)
	if err := os.WriteFile(kek, []byte(base64.StdEncoding.EncodeToString(secret)), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"KITH_STORE_URL=" + url, "KITH_CA_KEK_FILE=" + kek}, pg
}

// agentServing starts agent node on server s with a join token made on a, creates on a an entry for id
// that the agent serves, and returns the SVID once the agent's workload has it.
func agentServing(t *testing.T, a, s *cluster, node string, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	s.startAgent(node, a.joinToken(node)).waitOutput("kith agent started", 20*time.Second)
	mustKith(t, a.adminSocket, "entry", "create", "--spiffe-id", id.String(),
		"--node-selector", "join_token:name:"+node, "--selector", uidSelector())
	return waitSVID(t, s.agentDirs(node).socket, id)
}

// TestPostgresEachServerSignsWithItsOwnIntermediate: servers kith-0 and kith-1 on one PostgreSQL each sign
// with an intermediate of their own under the one root: a workload of an agent of each gets an SVID chained
// through its server's intermediate (its OU names the server), both verify with openssl against either
// server's bundle, kith ca show lists both, and a rotation through kith-1 replaces only kith-1's.
func TestPostgresEachServerSignsWithItsOwnIntermediate(t *testing.T) {
	servers, _ := haClusters(t, 2)
	workload := spiffeid.RequireFromPath(servers[0].td, "/e2e/workload")
	var intermediates []*x509.Certificate
	for i, s := range servers {
		node := fmt.Sprintf("node%d", i)
		svid := agentServing(t, servers[0], s, node, workload)
		if len(svid.Certificates) < 2 {
			t.Fatalf("the svid of the agent of kith-%d has no intermediate", i)
		}
		inter := svid.Certificates[1]
		if ou := inter.Subject.OrganizationalUnit; len(ou) != 1 || ou[0] != fmt.Sprintf("kith-%d", i) {
			t.Errorf("the svid from the agent of kith-%d is signed by %q, want the intermediate of kith-%d", i, inter.Subject, i)
		}
		intermediates = append(intermediates, inter)
		dir := shortTempDir(t)
		var leaf, chain []byte
		leaf = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: svid.Certificates[0].Raw})
		for _, c := range svid.Certificates[1:] {
			chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		for name, b := range map[string][]byte{"leaf.pem": leaf, "chain.pem": chain} {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		for j, other := range servers { // either server's bundle verifies either server's SVIDs
			bundle := filepath.Join(dir, fmt.Sprintf("bundle%d.pem", j))
			if err := os.WriteFile(bundle, []byte(mustKith(t, other.adminSocket, "bundle", "show", "--format", "pem")), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("openssl", "verify", "-CAfile", bundle, "-untrusted", filepath.Join(dir, "chain.pem"), filepath.Join(dir, "leaf.pem")).CombinedOutput()
			if err != nil {
				t.Errorf("openssl verify of kith-%d's svid against kith-%d's bundle: %v\n%s", i, j, err, out)
			}
		}
	}
	if intermediates[0].Equal(intermediates[1]) {
		t.Fatal("both servers sign with the same intermediate")
	}
	if !bytes.Equal(intermediates[0].AuthorityKeyId, intermediates[1].AuthorityKeyId) {
		t.Error("the servers' intermediates are under different roots")
	}

	activeBy := func(s *cluster) map[string]string {
		var resp struct {
			Authorities []struct {
				ID, Kind, State, Owner string
			}
		}
		if err := json.Unmarshal([]byte(mustKith(t, s.adminSocket, "ca", "show", "--output", "json")), &resp); err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, a := range resp.Authorities {
			if a.State == "active" {
				out[a.Kind+" "+a.Owner] = a.ID
			}
		}
		return out
	}
	before := activeBy(servers[0])
	for i, in := range intermediates {
		if got := before[fmt.Sprintf("x509-intermediate kith-%d", i)]; got != hex.EncodeToString(in.SubjectKeyId) {
			t.Errorf("kith ca show lists %q as kith-%d's active intermediate, want %x", got, i, in.SubjectKeyId)
		}
	}
	if table := mustKith(t, servers[0].adminSocket, "ca", "show"); !strings.Contains(table, "SERVER") || !strings.Contains(table, "kith-1") {
		t.Errorf("kith ca show does not name the servers:\n%s", table)
	}

	mustKith(t, servers[1].adminSocket, "ca", "rotate")
	after := activeBy(servers[1])
	if after["x509-intermediate kith-1"] == before["x509-intermediate kith-1"] || after["jwt "] == before["jwt "] {
		t.Errorf("kith ca rotate through kith-1 did not replace its intermediate and the jwt key: before %v, after %v", before, after)
	}
	if after["x509-intermediate kith-0"] != before["x509-intermediate kith-0"] {
		t.Errorf("kith ca rotate through kith-1 replaced kith-0's intermediate: before %v, after %v", before, after)
	}
	// kith-0 follows the change: it takes up the new jwt key (and sees kith-1's new intermediate).
	eventually(t, 5*time.Second, "kith-0 following kith-1's rotation", func() error {
		if got := activeBy(servers[0]); !maps.Equal(got, after) {
			return fmt.Errorf("kith-0 has %v active, kith-1 %v", got, after)
		}
		return nil
	})
}

// TestPostgresServersOnOneHostNameThemselves: two servers on one host and one PostgreSQL, without
// server_name: each names itself (kept in its data dir), so each has an intermediate of its own, and a
// restarted server keeps its name and its intermediate.
func TestPostgresServersOnOneHostNameThemselves(t *testing.T) {
	env, _ := haEnv(t)
	a, b := newClusterEnv(t, env...), newClusterEnv(t, env...)
	owners := func() map[string]string { // owner → active intermediate
		var resp struct {
			Authorities []struct{ ID, Kind, State, Owner string }
		}
		if err := json.Unmarshal([]byte(mustKith(t, a.adminSocket, "ca", "show", "-o", "json")), &resp); err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, x := range resp.Authorities {
			if x.Kind == "x509-intermediate" && x.State == "active" {
				out[x.Owner] = x.ID
			}
		}
		return out
	}
	var before map[string]string
	eventually(t, 5*time.Second, "two servers with an intermediate each", func() error {
		if before = owners(); len(before) != 2 || before[""] != "" {
			return fmt.Errorf("active intermediates by server: %v", before)
		}
		return nil
	})
	name, err := os.ReadFile(filepath.Join(b.dir, "server", "server-name"))
	if err != nil {
		t.Fatalf("server b kept no name in its data dir: %v", err)
	}
	if before[strings.TrimSpace(string(name))] == "" {
		t.Errorf("server b is named %q in its data dir, which owns none of %v", name, before)
	}
	b.server.stop()
	b.startServer()
	if after := owners(); !maps.Equal(after, before) {
		t.Errorf("after a restart of b the intermediates are %v, want %v kept", after, before)
	}
}

// TestPostgresCALeadershipMovesWhenTheLeaderDies: of two servers one holds the CA rotation lease (it rotates
// the roots and JWT keys); SIGKILL it, and the other takes the lease over within seconds (PostgreSQL ends the
// dead server's session, and with it the lock).
func TestPostgresCALeadershipMovesWhenTheLeaderDies(t *testing.T) {
	servers, _ := haClusters(t, 2)
	const leads = "this server now rotates the roots and jwt keys"
	var leader, other *cluster
	eventually(t, 10*time.Second, "one server taking the ca rotation lease", func() error {
		for i, s := range servers {
			if strings.Contains(s.server.stdout.String()+s.server.stderr.String(), leads) {
				leader, other = s, servers[1-i]
				return nil
			}
		}
		return errors.New("no server leads")
	})
	if strings.Contains(other.server.stdout.String()+other.server.stderr.String(), leads) {
		t.Fatal("both servers took the ca rotation lease")
	}
	leader.server.kill()
	killed := time.Now()
	other.server.waitOutput(leads, 15*time.Second)
	t.Logf("the other server took the ca rotation lease %s after the leader was killed", time.Since(killed).Round(10*time.Millisecond))
}

// TestPostgresKillServerUnderLoad: three servers on one PostgreSQL, two agents that know all three, eight
// clients writing entries and grants through all three. kill -9 of the server the first agent syncs with:
// every write a client saw acknowledged is in the store, the audit chain verifies, the agent moved to
// another server within 2 s (it gets an entry made after the kill), and no workload's Workload API fetch
// failed meanwhile.
func TestPostgresKillServerUnderLoad(t *testing.T) {
	servers, _ := haClusters(t, 3)
	all := make([]string, len(servers))
	for i, s := range servers {
		all[i] = s.grpcAddr
	}
	byAddr := map[string]*cluster{}
	for _, s := range servers {
		byAddr[s.grpcAddr] = s
	}
	a := servers[0]
	agents := map[string]*proc{}
	for _, node := range []string{"node1", "node2"} {
		agents[node] = a.startAgentAt(strings.Join(all, ","), node, a.joinToken(node), "KITH_AGENT_RETRY_MAX=1s")
	}
	workload := spiffeid.RequireFromPath(a.td, "/e2e/workload")
	for _, node := range []string{"node1", "node2"} {
		agents[node].waitOutput("kith agent started", 20*time.Second)
		mustKith(t, a.adminSocket, "entry", "create", "--spiffe-id", workload.String(),
			"--node-selector", "join_token:name:"+node, "--selector", uidSelector())
		waitSVID(t, a.agentDirs(node).socket, workload)
	}
	m := regexp.MustCompile(`kith agent started.* server=([0-9.:]+)`).FindStringSubmatch(agents["node1"].stdout.String() + agents["node1"].stderr.String())
	if m == nil {
		t.Fatal("the agent did not log the server it started with")
	}
	victim := byAddr[m[1]]
	var alive []*cluster
	for _, s := range servers {
		if s != victim {
			alive = append(alive, s)
		}
	}

	// Workloads fetch from both agents all along.
	stop := make(chan struct{})
	var fetchFailures atomic.Int64
	var fetches atomic.Int64
	var wg sync.WaitGroup
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop) }); wg.Wait() }
	defer halt() // before the agents stop, on a failure too
	for _, node := range []string{"node1", "node2"} {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, _, err := fetchSVID(a.agentDirs(node).socket, workload); err != nil {
					fetchFailures.Add(1)
					t.Errorf("Workload API fetch on %s failed: %v", node, err)
				}
				fetches.Add(1)
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	// Eight clients write entries and grants through every server in turn (the admin API on each server's
	// socket), and keep what was acknowledged.
	clients := make([]adminv1.AdminServiceClient, len(servers))
	for i, s := range servers {
		conn, err := grpc.NewClient("unix://"+s.adminSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		clients[i] = adminv1.NewAdminServiceClient(conn)
	}
	var mu sync.Mutex
	var acked []string
	var refused atomic.Int64
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				client := clients[(w+i)%len(clients)]
				id := fmt.Sprintf("spiffe://e2e.test/load/w%d/%d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				var err error
				if i%2 == 0 {
					_, err = client.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: &adminv1.Entry{
						SpiffeId: id, ParentId: "spiffe://e2e.test/kith/agent/join_token/none", Selectors: []string{"unix:uid:4242"}}})
				} else {
					_, err = client.CreateGrant(ctx, &adminv1.CreateGrantRequest{Grant: &adminv1.Grant{Caller: id, Target: "spiffe://e2e.test/e2e/payments"}})
				}
				cancel()
				if err != nil {
					refused.Add(1)
					continue
				}
				mu.Lock()
				acked = append(acked, id)
				mu.Unlock()
			}
		})
	}
	time.Sleep(2 * time.Second)
	victim.server.kill()
	killed := time.Now()
	after := spiffeid.RequireFromPath(a.td, "/e2e/after-kill")
	mustKith(t, alive[0].adminSocket, "entry", "create", "--spiffe-id", after.String(),
		"--node-selector", "join_token:name:node1", "--selector", uidSelector())
	eventually(t, 10*time.Second, "the agent of the killed server serves an entry made after the kill", func() error {
		_, _, err := fetchSVID(a.agentDirs("node1").socket, after)
		return err
	})
	moved := time.Since(killed)
	t.Logf("the agent of the killed server had an entry made after the kill %s later", moved.Round(time.Millisecond))
	if moved > 2*time.Second {
		t.Errorf("the agent of the killed server took %s to serve from another one, want at most 2 s", moved)
	}
	time.Sleep(2 * time.Second)
	halt()

	entries := mustKith(t, alive[1].adminSocket, "entry", "list", "-o", "json")
	grants := mustKith(t, alive[1].adminSocket, "grants", "list", "-o", "json")
	for i, id := range acked {
		if !strings.Contains(entries, `"`+id+`"`) && !strings.Contains(grants, `"`+id+`"`) {
			t.Errorf("acknowledged write %d (%s) is not in the store", i, id)
		}
	}
	t.Logf("%d acknowledged writes, all present (%d refused, by the killed server); %d Workload API fetches, %d failed", len(acked), refused.Load(), fetches.Load(), fetchFailures.Load())
	if len(acked) < 100 {
		t.Errorf("only %d writes were acknowledged: the load did not load", len(acked))
	}
	if out := mustKith(t, alive[1].adminSocket, "audit", "verify"); !strings.Contains(out, "audit log intact") {
		t.Errorf("kith audit verify = %q", out)
	}
}

// TestPostgresRestartDatabaseUnderLoad: PostgreSQL stops (immediate mode, as a crash) and starts again
// while two servers serve an agent and a workload fetches from it. The agent keeps serving the workload
// from memory throughout; once the database is back, the servers recover by themselves: a change made on
// one reaches the agent synced with the other.
func TestPostgresRestartDatabaseUnderLoad(t *testing.T) {
	servers, pg := haClusters(t, 2)
	a, b := servers[0], servers[1]
	workload := spiffeid.RequireFromPath(a.td, "/e2e/workload")
	agentServing(t, a, b, "node1", workload)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var fetches, failures atomic.Int64
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, _, err := fetchSVID(b.agentDirs("node1").socket, workload); err != nil {
				failures.Add(1)
				t.Errorf("Workload API fetch failed while the database was down: %v", err)
			}
			fetches.Add(1)
			time.Sleep(20 * time.Millisecond)
		}
	})
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	if r := kith(t, a.adminSocket, "entry", "list"); r.code == 0 {
		t.Error("kith entry list succeeded with the database down")
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	after := spiffeid.RequireFromPath(a.td, "/e2e/after-restart")
	eventually(t, 20*time.Second, "server A takes writes again", func() error {
		r := kith(t, a.adminSocket, "entry", "create", "--spiffe-id", after.String(),
			"--node-selector", "join_token:name:node1", "--selector", uidSelector())
		if r.code != 0 {
			return fmt.Errorf("exit %d: %s", r.code, r.stderr)
		}
		return nil
	})
	waitSVID(t, b.agentDirs("node1").socket, after)
	t.Logf("after the restart, a write on A reached the agent of B %s after the database was back; %d fetches during the test, %d failed",
		time.Since(back).Round(time.Millisecond), fetches.Load(), failures.Load())
}

// TestPostgresHistoryLostResyncsAgents: the database goes back a revision, as after a restore from a backup
// or a failover to a replica that lacked the last commit: an entry the agent (synced with B) already serves
// is gone, and the next write on A reuses its revision number for another entry. Resuming from its revision
// would leave the agent serving the lost entry and never learning of the new one; B notices the database
// went back and sends the agent a full snapshot instead.
func TestPostgresHistoryLostResyncsAgents(t *testing.T) {
	servers, pg := haClusters(t, 2)
	a, b := servers[0], servers[1]
	lostID := spiffeid.RequireFromPath(a.td, "/e2e/lost")
	agentServing(t, a, b, "node1", lostID)

	raw, err := sql.Open("pgx", pg.SocketURL("kith1")) // haClusters' database, the cluster's first
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for _, q := range []string{
		"DELETE FROM entries WHERE spiffe_id = '" + lostID.String() + "'",
		"DELETE FROM changes WHERE revision = (SELECT revision FROM revision WHERE id = 1)",
		"UPDATE revision SET revision = revision - 1 WHERE id = 1",
	} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	after := spiffeid.RequireFromPath(a.td, "/e2e/after-loss")
	mustKith(t, a.adminSocket, "entry", "create", "--spiffe-id", after.String(),
		"--node-selector", "join_token:name:node1", "--selector", uidSelector())
	waitSVID(t, b.agentDirs("node1").socket, after)
	eventually(t, 15*time.Second, "the lost entry leaves the agent", func() error {
		_, x509ctx, err := fetchSVID(b.agentDirs("node1").socket, after)
		if err != nil {
			return err
		}
		for _, s := range x509ctx.SVIDs {
			if s.ID == lostID {
				return fmt.Errorf("the agent still serves %s", lostID)
			}
		}
		return nil
	})
	a.server.waitOutput("the database's revision went back", 15*time.Second) // A's write reused the lost number
}

// TestPostgresMigrateFromSQLite: a populated SQLite deployment (an agent, entries, a grant, its audit log)
// is stopped, moved with kith store migrate (which compares both stores and fails on a difference), and
// started again on PostgreSQL with the moved CA keys: the agent syncs again, gets a new entry's SVID
// under the same CA, and the audit log verifies and reaches the data dir's signed checkpoint.
func TestPostgresMigrateFromSQLite(t *testing.T) {
	c := newCluster(t)
	agent := c.startAgent("node1", c.joinToken("node1"))
	agent.waitOutput("kith agent started", 20*time.Second)
	for _, name := range []string{"frontend", "payments"} {
		mustKith(t, c.adminSocket, "entry", "create", "--spiffe-id", "spiffe://e2e.test/e2e/"+name,
			"--node-selector", "join_token:name:node1", "--selector", uidSelector())
	}
	waitSVID(t, c.agentDirs("node1").socket, spiffeid.RequireFromPath(c.td, "/e2e/payments"))
	mustKith(t, c.adminSocket, "grant", "frontend", "payments")
	before := mustKith(t, c.adminSocket, "bundle", "show", "--format", "pem")
	if code := c.server.stop(); code != 0 {
		t.Fatalf("kith server exited %d on SIGTERM", code)
	}

	pg := pgtest.Start(t, pgtest.Options{})
	url := pg.NewDatabase(t)
	kek := filepath.Join(c.dir, "kek")
	secret := make([]byte, 32)
	rand.Read(secret)
	if err := os.WriteFile(kek, []byte(base64.StdEncoding.EncodeToString(secret)), 0o600); err != nil {
		t.Fatal(err)
	}
	out := mustKith(t, c.adminSocket, "store", "migrate", "--from", "sqlite://"+filepath.Join(c.dir, "server", "kith.db"), "--to", url, "--kek-file", kek)
	if !strings.Contains(out, "verified on both") {
		t.Fatalf("kith store migrate = %q", out)
	}
	t.Log(strings.TrimSpace(out))
	if r := kith(t, c.adminSocket, "store", "migrate", "--from", "sqlite://"+filepath.Join(c.dir, "server", "kith.db"), "--to", url, "--kek-file", kek); r.code == 0 || !strings.Contains(r.stderr, "not empty") {
		t.Errorf("a second migrate into the same database: exit %d, %q; want it refused as not empty", r.code, r.stderr)
	}

	c.extraEnv = []string{"KITH_STORE_URL=" + url, "KITH_CA_KEK_FILE=" + kek}
	c.startServer()
	if after := mustKith(t, c.adminSocket, "bundle", "show", "--format", "pem"); after != before {
		t.Errorf("the bundle changed with the move:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	late := spiffeid.RequireFromPath(c.td, "/e2e/after-move")
	mustKith(t, c.adminSocket, "entry", "create", "--spiffe-id", late.String(),
		"--node-selector", "join_token:name:node1", "--selector", uidSelector())
	waitSVID(t, c.agentDirs("node1").socket, late)
	if out := mustKith(t, c.adminSocket, "audit", "verify"); !strings.Contains(out, "audit log intact") || !strings.Contains(out, "checkpoint") {
		t.Errorf("kith audit verify after the move = %q", out)
	}
	if out := mustKith(t, c.adminSocket, "grants", "list"); !strings.Contains(out, "frontend") {
		t.Errorf("the grant did not move: kith grants list = %q", out)
	}
}
