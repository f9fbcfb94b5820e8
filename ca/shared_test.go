package ca_test

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/catest"
	"github.com/kithid/kith/ca/keymanager/memory"
	"github.com/kithid/kith/internal/testutil"
)

// cluster is several servers' CAs on one store and one key manager, as on one PostgreSQL database.
type cluster struct {
	t         *testing.T
	clk       *testutil.Clock
	store     *catest.Store
	keys      ca.KeyManager
	lock      sync.Mutex // the database lock
	leader    atomic.Pointer[string]
	locked    atomic.Int32 // how many holders of lock at once (must stay ≤ 1)
	lockCount atomic.Int64 // how many times it was taken
	mods      []func(*ca.Config)
}

func newCluster(t *testing.T, leader string, mods ...func(*ca.Config)) *cluster {
	cl := &cluster{t: t, clk: testutil.NewClock(t0), store: catest.NewStore(), keys: memory.New(), mods: mods}
	cl.leader.Store(&leader)
	return cl
}

func (cl *cluster) setLeader(name string) { cl.leader.Store(&name) }

// server starts the CA of server name.
func (cl *cluster) server(name string) *ca.CA {
	cl.t.Helper()
	cfg := ca.Config{TrustDomain: td, Keys: cl.keys, Store: cl.store, Now: cl.clk.Now,
		Shared: &ca.Shared{
			Name: name,
			Lock: func(_ context.Context, fn func() error) error {
				cl.lock.Lock()
				defer cl.lock.Unlock()
				cl.lockCount.Add(1)
				if cl.locked.Add(1) > 1 {
					cl.t.Error("two holders of the shared lock")
				}
				defer cl.locked.Add(-1)
				return fn()
			},
			Leader: func() bool { return *cl.leader.Load() == name },
		}}
	for _, m := range cl.mods {
		m(&cfg)
	}
	c, err := ca.New(context.Background(), cfg)
	if err != nil {
		cl.t.Fatalf("start server %s: %v", name, err)
	}
	return c
}

func tickAll(t *testing.T, cs ...*ca.CA) {
	t.Helper()
	for _, c := range cs {
		if err := c.Tick(context.Background()); err != nil {
			t.Fatalf("tick: %v", err)
		}
	}
}

// intermediates lists the non-retired intermediates as "owner/state under root-ID-prefix".
func intermediates(c *ca.CA) map[string][]string {
	out := map[string][]string{}
	for _, a := range c.Authorities() {
		if a.Kind == ca.KindX509Intermediate && a.State != ca.StateRetired {
			out[a.Owner] = append(out[a.Owner], string(a.State)+" under "+a.ParentID[:8])
		}
	}
	return out
}

func activeRoot(t *testing.T, c *ca.CA) string {
	t.Helper()
	return active(t, c, ca.KindX509Root).ID[:8]
}

// signer returns the intermediate (first certificate after the leaf) an SVID of c is signed by.
func signer(t *testing.T, c *ca.CA) *x509.Certificate {
	t.Helper()
	chain := issue(t, c, workload, time.Hour)
	if len(chain) < 2 {
		t.Fatalf("chain of %d certificates", len(chain))
	}
	return chain[1]
}

func TestSharedServersSignWithIntermediatesOfTheirOwn(t *testing.T) {
	cl := newCluster(t, "a")
	a, b := cl.server("a"), cl.server("b")
	if err := a.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	root := activeRoot(t, a)
	want := map[string][]string{"a": {"active under " + root}, "b": {"active under " + root}}
	for name, c := range map[string]*ca.CA{"a": a, "b": b} {
		if diff := cmp.Diff(want, intermediates(c)); diff != "" {
			t.Errorf("intermediates seen by %s (-want +got):\n%s", name, diff)
		}
	}
	ia, ib := signer(t, a), signer(t, b)
	if ia.Equal(ib) {
		t.Fatal("both servers sign with the same intermediate")
	}
	if diff := cmp.Diff([][]string{{"a"}, {"b"}}, [][]string{ia.Subject.OrganizationalUnit, ib.Subject.OrganizationalUnit}); diff != "" {
		t.Errorf("intermediate OUs (-want +got):\n%s", diff)
	}
	if !a.Bundle().Equal(b.Bundle()) {
		t.Error("the servers publish different bundles")
	}
	// Every server's SVIDs verify against every server's bundle: one root.
	for _, c := range []*ca.CA{a, b} {
		for _, other := range []*ca.CA{a, b} {
			if _, _, err := x509svid.Verify(issue(t, c, workload, time.Hour), other.Bundle(), x509svid.WithTime(cl.clk.Now())); err != nil {
				t.Errorf("svid does not verify against the other server's bundle: %v", err)
			}
		}
	}
	if active(t, a, ca.KindJWT).ID != active(t, b, ca.KindJWT).ID {
		t.Error("the servers sign JWT-SVIDs with different keys")
	}
	// A restarted server takes up its own intermediate again.
	b2 := cl.server("b")
	if !signer(t, b2).Equal(ib) {
		t.Error("restarted server b made a new intermediate instead of using its own")
	}
}

func TestSharedServersRotateTheirOwnIntermediateAndOnlyTheLeaderTheJWTKey(t *testing.T) {
	cl := newCluster(t, "a")
	a, b := cl.server("a"), cl.server("b")
	ia, ib := signer(t, a), signer(t, b)
	jwt := active(t, a, ca.KindJWT).ID

	cl.clk.Set(ib.NotBefore.Add(ib.NotAfter.Sub(ib.NotBefore) * 5 / 6).Add(time.Minute)) // past activateAt of both
	tickAll(t, b)
	if signer(t, b).Equal(ib) {
		t.Error("b did not rotate its intermediate")
	}
	if got := active(t, b, ca.KindJWT).ID; got != jwt {
		t.Error("b, not the leader, rotated the jwt key")
	}
	if err := a.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !signer(t, a).Equal(ia) {
		t.Error("b's rotation replaced a's intermediate")
	}
	tickAll(t, a)
	if signer(t, a).Equal(ia) {
		t.Error("a did not rotate its intermediate")
	}
	newJWT := active(t, a, ca.KindJWT).ID
	if newJWT == jwt {
		t.Error("the leader did not rotate the jwt key")
	}
	if err := b.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := active(t, b, ca.KindJWT).ID; got != newJWT {
		t.Errorf("b signs jwt-svids with %s after reloading, want the leader's new key %s", got, newJWT)
	}
	// The key manager keeps the keys of what is not retired only.
	for _, in := range []*x509.Certificate{ia, ib} {
		for _, auth := range a.Authorities() {
			if auth.ID == hexID(in) && auth.State == ca.StateRetired {
				if _, err := cl.keys.GetKey(context.Background(), auth.KeyID); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("key of retired intermediate %s still held: %v", auth.ID, err)
				}
			}
		}
	}
}

func hexID(c *x509.Certificate) string { return hex.EncodeToString(c.SubjectKeyId) }

func TestSharedRootRotationMovesEveryServer(t *testing.T) {
	cl := newCluster(t, "a")
	a, b, c := cl.server("a"), cl.server("b"), cl.server("c")
	oldRoot := activeRoot(t, a)
	if err := a.Rotate(context.Background(), "alice", true); err != nil {
		t.Fatal(err)
	}
	var newRoot string
	for _, auth := range a.Authorities() {
		if auth.Kind == ca.KindX509Root && auth.State == ca.StatePrepared {
			newRoot = auth.ID[:8]
		}
	}
	tickAll(t, b) // b prepares its intermediate under the new root; c is not running now
	if diff := cmp.Diff(map[string][]string{
		"a": {"active under " + oldRoot, "prepared under " + newRoot},
		"b": {"active under " + oldRoot, "prepared under " + newRoot},
		"c": {"active under " + oldRoot},
	}, intermediates(b)); diff != "" {
		t.Errorf("during the rotation (-want +got):\n%s", diff)
	}
	var preparedB string
	for _, auth := range b.Authorities() {
		if auth.Owner == "b" && auth.State == ca.StatePrepared {
			preparedB = auth.ID
		}
	}

	cl.clk.Advance(2*24*time.Hour + time.Minute) // the root overlap: 2 × max x509-svid ttl
	tickAll(t, b)                                // not the leader: does not switch
	if got := activeRoot(t, b); got != oldRoot {
		t.Fatalf("b switched the root (to %s)", got)
	}
	tickAll(t, a)
	want := map[string][]string{"a": {"active under " + newRoot}, "b": {"active under " + newRoot}, "c": {"active under " + newRoot}}
	if diff := cmp.Diff(want, intermediates(a)); diff != "" {
		t.Errorf("after the switch (-want +got):\n%s", diff)
	}
	for _, s := range []*ca.CA{b, c} {
		if err := s.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		in := signer(t, s)
		if in.CheckSignatureFrom(mustParse(t, active(t, s, ca.KindX509Root).CertDER)) != nil {
			t.Errorf("server %s does not sign under the new root", in.Subject.OrganizationalUnit)
		}
		if err := verify(t, s, issue(t, s, workload, time.Hour), cl.clk.Now()); err != nil {
			t.Errorf("svid after the switch: %v", err)
		}
	}
	if got := hexID(signer(t, b)); got != preparedB {
		t.Errorf("b signs with %s, want the intermediate it prepared, %s", got, preparedB)
	}
	// c was not running: the leader made its intermediate under the new root; c's SVIDs name c.
	if ou := signer(t, c).Subject.OrganizationalUnit; len(ou) != 1 || ou[0] != "c" {
		t.Errorf("c signs with an intermediate of %v", ou)
	}
}

func TestSharedLeaderRetiresTheIntermediatesOfServersThatAreGone(t *testing.T) {
	cl := newCluster(t, "a")
	a, b := cl.server("a"), cl.server("b")
	gone := cl.server("gone")
	in := signer(t, gone)
	_ = gone // stops here

	// a and b live through the gone server's intermediate lifetime, rotating theirs.
	for cl.clk.Now().Before(in.NotAfter.Add(time.Minute)) {
		cl.clk.Advance(12 * time.Hour)
		tickAll(t, b, a)
	}
	got := intermediates(a)
	if _, ok := got["gone"]; ok {
		t.Errorf("the gone server's intermediate is still %v", got["gone"])
	}
	for _, auth := range a.Authorities() {
		if auth.ID == hexID(in) {
			if auth.State != ca.StateRetired {
				t.Errorf("gone server's intermediate is %s", auth.State)
			}
			if _, err := cl.keys.GetKey(context.Background(), auth.KeyID); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("gone server's key still held: %v", err)
			}
		}
	}
	if len(got["a"]) == 0 || len(got["b"]) == 0 {
		t.Errorf("a and b lost their intermediates: %v", got)
	}
	// Its name comes back: it makes a new intermediate.
	back := cl.server("gone")
	if signer(t, back).Equal(in) {
		t.Error("the returning server signs with its expired intermediate")
	}
}

func TestSharedLeadershipMovesToAnotherServer(t *testing.T) {
	cl := newCluster(t, "a")
	a, b := cl.server("a"), cl.server("b")
	jwt := active(t, b, ca.KindJWT)
	cl.setLeader("b") // a is gone
	_ = a
	cl.clk.Set(jwt.NotBefore.Add(jwt.NotAfter.Sub(jwt.NotBefore) * 5 / 6).Add(time.Minute))
	tickAll(t, b)
	if active(t, b, ca.KindJWT).ID == jwt.ID {
		t.Error("the new leader did not rotate the jwt key")
	}
}

func TestSharedServersTickingAtOnceKeepTheAuthoritiesConsistent(t *testing.T) {
	cl := newCluster(t, "a")
	servers := []*ca.CA{cl.server("a"), cl.server("b"), cl.server("c")}
	if err := servers[0].Rotate(context.Background(), "alice", true); err != nil {
		t.Fatal(err)
	}
	for range 40 {
		cl.clk.Advance(6 * time.Hour)
		var wg sync.WaitGroup
		for _, s := range servers {
			wg.Go(func() {
				for range 3 {
					if err := s.Tick(context.Background()); err != nil {
						t.Errorf("tick: %v", err)
					}
					if err := s.Reload(context.Background()); err != nil {
						t.Errorf("reload: %v", err)
					}
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
	}
	// What is stored is consistent: a server started on it loads it, and each server has one intermediate.
	fresh := cl.server("a")
	got := intermediates(fresh)
	for _, name := range []string{"a", "b", "c"} {
		active := 0
		for _, s := range got[name] {
			if len(s) > 6 && s[:6] == "active" {
				active++
			}
		}
		if active != 1 {
			t.Errorf("server %s has %v", name, got[name])
		}
	}
	for _, s := range servers {
		if err := verify(t, fresh, issue(t, s, workload, time.Hour), cl.clk.Now()); err != nil {
			t.Errorf("svid: %v", err)
		}
	}
}

func TestSharedServersUnderAnUpstreamMintTheirOwn(t *testing.T) {
	var up *catest.Upstream
	cl := newCluster(t, "a", func(cfg *ca.Config) { cfg.Upstream = up })
	up = catest.NewUpstream(t, cl.clk.Now)
	a, b := cl.server("a"), cl.server("b")
	if n := len(up.Mints()); n != 2 {
		t.Errorf("%d mints, want one per server", n)
	}
	ia, ib := signer(t, a), signer(t, b)
	if ia.Equal(ib) || ia.Subject.OrganizationalUnit[0] != "a" || ib.Subject.OrganizationalUnit[0] != "b" {
		t.Errorf("intermediates %v and %v", ia.Subject, ib.Subject)
	}
	for _, s := range []*ca.CA{a, b} {
		if err := verifyUpstream(issue(t, s, workload, time.Hour), up.Roots(), cl.clk.Now()); err != nil {
			t.Errorf("svid under the upstream: %v", err)
		}
	}
}

func TestSharedServersTakeOverAStoreOfOneServer(t *testing.T) {
	cl := newCluster(t, "a")
	// A deployment of one server (no owners) moved to a shared store.
	alone, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Keys: cl.keys, Store: cl.store, Now: cl.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	old := signer(t, alone)
	a, b := cl.server("a"), cl.server("b")
	if signer(t, a).Equal(old) || signer(t, b).Equal(old) {
		t.Error("a server signs with the intermediate of the single server")
	}
	for cl.clk.Now().Before(old.NotAfter.Add(time.Minute)) {
		cl.clk.Advance(12 * time.Hour)
		tickAll(t, b, a)
	}
	if got := intermediates(a); got[""] != nil {
		t.Errorf("the single server's intermediate is still %v after it expired", got[""])
	}
}

func TestSharedConfigIsChecked(t *testing.T) {
	lock := func(_ context.Context, fn func() error) error { return fn() }
	leader := func() bool { return true }
	for _, tc := range []struct {
		name   string
		shared ca.Shared
		want   string
	}{
		{"no name", ca.Shared{Lock: lock, Leader: leader}, `server name "" is not`},
		{"bad name", ca.Shared{Name: "a/b", Lock: lock, Leader: leader}, `server name "a/b" is not`},
		{"no lock", ca.Shared{Name: "a", Leader: leader}, "needs a lock"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Keys: memory.New(), Store: catest.NewStore(), Shared: &tc.shared})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// restart starts server name again with mods on top of the cluster's.
func (cl *cluster) restart(name string, mods ...func(*ca.Config)) *ca.CA {
	cl.t.Helper()
	saved := cl.mods
	cl.mods = append(slices.Clone(saved), mods...)
	defer func() { cl.mods = saved }()
	return cl.server(name)
}

// TestSharedSwitchToAnUpstreamWhenTheLeaderChanges: self-signed servers a (leading) and b restart with an
// upstream; b moves its own intermediate first, then b becomes the leader: it must move a's too and retire
// the CA's own root, and the store must stay loadable throughout — also when a is gone for good.
func TestSharedSwitchToAnUpstreamWhenTheLeaderChanges(t *testing.T) {
	for _, aGone := range []bool{false, true} {
		t.Run(fmt.Sprintf("a gone %v", aGone), func(t *testing.T) {
			cl := newCluster(t, "a")
			cl.server("a")
			cl.server("b")
			up := catest.NewUpstream(t, cl.clk.Now)
			withUp := func(cfg *ca.Config) { cfg.Upstream = up }
			a, b := cl.restart("a", withUp), cl.restart("b", withUp)
			cl.clk.Advance(49 * time.Hour) // past the root overlap
			tickAll(t, b)                  // not the leader: moves only its own intermediate
			if err := verifyUpstream(issue(t, b, workload, time.Hour), up.Roots(), cl.clk.Now()); err != nil {
				t.Fatalf("b does not sign under the upstream: %v", err)
			}
			cl.setLeader("b")
			if aGone {
				cl.clk.Advance(8 * 24 * time.Hour) // a's intermediate expires; b keeps its own rotated
				for range 3 {
					tickAll(t, b)
				}
			} else {
				tickAll(t, b)
			}
			for _, auth := range b.Authorities() {
				if auth.Kind == ca.KindX509Root && auth.KeyID != "" && auth.State != ca.StateRetired {
					t.Errorf("the ca's own root %s is still %s", auth.ID, auth.State)
				}
			}
			fresh := cl.restart("c", withUp) // the store loads
			if err := verifyUpstream(issue(t, fresh, workload, time.Hour), up.Roots(), cl.clk.Now()); err != nil {
				t.Errorf("a new server does not sign under the upstream: %v", err)
			}
			if !aGone {
				if err := a.Reload(context.Background()); err != nil {
					t.Fatal(err)
				}
				if err := verifyUpstream(issue(t, a, workload, time.Hour), up.Roots(), cl.clk.Now()); err != nil {
					t.Errorf("a was not moved to the upstream by the new leader: %v", err)
				}
			}
		})
	}
}

// TestSharedNonLeaderWaitsDuringASwitchFromAnUpstream: while the leader switches every server from an
// upstream to a root of the CA's own, a server that is not the leader has nothing to do until the switch:
// its Run must not tick (lock the database) every second meanwhile.
func TestSharedNonLeaderWaitsDuringASwitchFromAnUpstream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var up *catest.Upstream
		cl := newCluster(t, "a")
		up = catest.NewUpstream(t, cl.clk.Now)
		withUp := func(cfg *ca.Config) { cfg.Upstream = up }
		cl.restart("a", withUp)
		cl.restart("b", withUp)
		a, b := cl.server("a"), cl.server("b") // no upstream any more: a starts a root of the ca's own
		tickAll(t, a)
		locks := cl.lockCount.Load()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- b.Run(ctx) }()
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		cancel()
		<-done
		if n := cl.lockCount.Load() - locks; n > 20 {
			t.Errorf("b locked the database %d times in 10 minutes with nothing to do", n)
		}
	})
}
