package ca_test

import (
	"context"
	"crypto/x509"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/catest"
	"github.com/kithid/kith/ca/keymanager/memory"
	"github.com/kithid/kith/internal/testutil"
)

// A deployment moves from its self-signed root to an upstream and back, as root rotations: at every step
// the SVIDs signed before and after verify against the bundle of that moment (no workload holding either
// chain fails a handshake), the roots moved to are published RootOverlap before they sign, and the roots
// left stay published for MaxX509SVIDTTL after they stop signing. A restart in the middle of a switch
// resumes it.
func TestSwitchBetweenSelfSignedAndUpstream(t *testing.T) {
	clk := testutil.NewClock(t0)
	up := catest.NewUpstream(t, clk.Now)
	store, keys := catest.NewStore(), memory.New()
	open := func(u ca.UpstreamAuthority) *ca.CA {
		t.Helper()
		cfg := ca.Config{TrustDomain: td, Keys: keys, Store: store, Now: clk.Now}
		if u != nil {
			cfg.Upstream = u
		}
		c, err := ca.New(context.Background(), cfg)
		if err != nil {
			t.Fatalf("ca.New (upstream %v): %v", u != nil, err)
		}
		return c
	}
	roots := func(c *ca.CA) []*x509.Certificate { return c.Bundle().X509Authorities() }
	ownRoot := func(c *ca.CA) *x509.Certificate {
		t.Helper()
		for _, r := range roots(c) {
			if !slices.ContainsFunc(up.Roots(), r.Equal) {
				return r
			}
		}
		t.Fatal("the bundle has no root of the ca's own")
		return nil
	}
	allVerify := func(c *ca.CA, step string, chains ...[]*x509.Certificate) {
		t.Helper()
		for i, chain := range chains {
			if err := verify(t, c, chain, clk.Now()); err != nil {
				t.Errorf("%s: svid %d does not verify against the bundle: %v", step, i, err)
			}
		}
	}

	self := open(nil)
	own := ownRoot(self)
	beforeSwitch := issue(t, self, workload, 0)

	// Self-signed → upstream: the upstream's roots are published at once; the CA keeps signing under its own.
	c := open(up)
	if got := len(roots(c)); got != 1+len(up.Roots()) {
		t.Fatalf("bundle has %d roots after starting with an upstream, want its own and the upstream's %d", got, len(up.Roots()))
	}
	during := issue(t, c, workload, 0)
	if err := verifyUpstream(during, []*x509.Certificate{own}, clk.Now()); err != nil {
		t.Errorf("an svid signed before the overlap has passed does not chain to the ca's own root: %v", err)
	}
	allVerify(c, "switch to upstream started", beforeSwitch, during)
	clk.Advance(24 * time.Hour)
	tick(t, c)
	c = open(up) // a restart in the middle resumes the switch
	if err := verifyUpstream(issue(t, c, workload, 0), []*x509.Certificate{own}, clk.Now()); err != nil {
		t.Errorf("after a restart half-way through the overlap, svids no longer chain to the ca's own root: %v", err)
	}

	clk.Advance(24 * time.Hour) // just before RootOverlap (48h) has passed
	during = issue(t, c, workload, 0)
	clk.Advance(time.Second)
	tick(t, c)
	under := issue(t, c, workload, 0)
	if err := verifyUpstream(under, up.Roots(), clk.Now()); err != nil {
		t.Errorf("after the overlap, svids do not chain to the upstream: %v", err)
	}
	if a := store.Actions(); !slices.Contains(a, "ca.switch.upstream") {
		t.Errorf("store actions %v, want ca.switch.upstream", a)
	}
	allVerify(c, "switched to upstream", during, under)
	clk.Advance(24*time.Hour + time.Second) // MaxX509SVIDTTL: the own root's svids have expired
	tick(t, c)
	if diff := cmp.Diff(up.Roots(), roots(c)); diff != "" {
		t.Errorf("bundle roots once the ca's own svids expired (-want +got):\n%s", diff)
	}

	// Upstream → self-signed: a new root of the ca's own is published at once, and signs after the overlap.
	c = open(nil)
	if got := len(roots(c)); got != len(up.Roots())+1 {
		t.Fatalf("bundle has %d roots after starting without the upstream, want the upstream's %d and a new own one", got, len(up.Roots()))
	}
	newOwn := ownRoot(c)
	if newOwn.Equal(own) {
		t.Error("switching back reuses the retired root")
	}
	stillUnder := issue(t, c, workload, 0)
	if err := verifyUpstream(stillUnder, up.Roots(), clk.Now()); err != nil {
		t.Errorf("before the overlap has passed, svids do not chain to the upstream: %v", err)
	}
	allVerify(c, "switch back started", stillUnder)
	clk.Advance(48 * time.Hour)
	stillUnder = issue(t, c, workload, 0)
	clk.Advance(time.Second)
	tick(t, c)
	back := issue(t, c, workload, 0)
	if err := verifyUpstream(back, []*x509.Certificate{newOwn}, clk.Now()); err != nil {
		t.Errorf("after the overlap, svids do not chain to the new own root: %v", err)
	}
	if a := store.Actions(); !slices.Contains(a, "ca.switch.self_signed") {
		t.Errorf("store actions %v, want ca.switch.self_signed", a)
	}
	allVerify(c, "switched back", stillUnder, back)
	clk.Advance(24*time.Hour + time.Second)
	tick(t, c)
	if diff := cmp.Diff([]*x509.Certificate{newOwn}, roots(c)); diff != "" {
		t.Errorf("bundle roots once the upstream's svids expired (-want +got):\n%s", diff)
	}
	if n := count(c, ca.KindX509Root, ca.StateActive); n != 1 {
		t.Errorf("%d active roots after switching back, want 1", n)
	}
}
