package ca_test

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/catest"
	"github.com/kithid/kith/ca/keymanager/disk"
	"github.com/kithid/kith/ca/keymanager/memory"
	"github.com/kithid/kith/internal/testutil"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

const day = 24 * time.Hour

func tick(t testing.TB, c *ca.CA) {
	t.Helper()
	if err := c.Tick(context.Background()); err != nil {
		t.Fatalf("Tick: %v", err)
	}
}

func sequence(t testing.TB, c *ca.CA) uint64 {
	t.Helper()
	seq, ok := c.Bundle().SequenceNumber()
	if !ok {
		t.Fatal("bundle has no sequence number")
	}
	return seq
}

func TestNewCreatesActiveAuthorities(t *testing.T) {
	f := newFixture(t, testutil.NewClock(t0).Now)
	if diff := cmp.Diff([]string{"ca.init"}, f.store.Actions()); diff != "" {
		t.Errorf("store actions (-want +got):\n%s", diff)
	}
	if got := f.store.Calls()[0].Actor; got != "system" {
		t.Errorf("init actor %q, want system", got)
	}
	var kinds []string
	for _, a := range f.ca.Authorities() {
		kinds = append(kinds, string(a.Kind)+"/"+string(a.State))
	}
	want := []string{"x509-root/active", "x509-intermediate/active", "jwt/active"}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Errorf("authorities (-want +got):\n%s", diff)
	}
	root := mustParse(t, active(t, f.ca, ca.KindX509Root).CertDER)
	inter := mustParse(t, active(t, f.ca, ca.KindX509Intermediate).CertDER)
	type caProfile struct {
		IsCA       bool
		MaxPathLen int
		KeyUsage   x509.KeyUsage
		URI        string
		Lifetime   time.Duration
	}
	for _, c := range []struct {
		cert *x509.Certificate
		want caProfile
	}{
		{root, caProfile{true, 1, x509.KeyUsageCertSign | x509.KeyUsageCRLSign, "spiffe://example.org", 365*day + time.Minute}},
		{inter, caProfile{true, 0, x509.KeyUsageCertSign | x509.KeyUsageCRLSign, "spiffe://example.org", 7*day + time.Minute}},
	} {
		got := caProfile{c.cert.IsCA, c.cert.MaxPathLen, c.cert.KeyUsage, c.cert.URIs[0].String(), c.cert.NotAfter.Sub(c.cert.NotBefore)}
		if diff := cmp.Diff(c.want, got); diff != "" {
			t.Errorf("%s profile (-want +got):\n%s", c.cert.Subject.CommonName, diff)
		}
	}
	if err := inter.CheckSignatureFrom(root); err != nil {
		t.Errorf("intermediate is not signed by the root: %v", err)
	}
	b := f.ca.Bundle()
	if len(b.X509Authorities()) != 1 || len(b.JWTAuthorities()) != 1 {
		t.Errorf("bundle has %d roots and %d jwt keys, want 1 and 1", len(b.X509Authorities()), len(b.JWTAuthorities()))
	}
	if hint, _ := b.RefreshHint(); hint != time.Hour {
		t.Errorf("refresh hint %s, want 1h", hint)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     ca.Config
		wantMsg string
	}{
		{"no trust domain", ca.Config{Keys: memory.New(), Store: catest.NewStore()}, "trust domain is required"},
		{"no key manager", ca.Config{TrustDomain: td, Store: catest.NewStore()}, "key manager is required"},
		{"no store", ca.Config{TrustDomain: td, Keys: memory.New()}, "authority store is required"},
		{"a default ttl above the maximum", ca.Config{TrustDomain: td, Keys: memory.New(), Store: catest.NewStore(), X509SVIDTTL: 48 * time.Hour}, "x509-svid ttl 48h0m0s is outside"},
		{"a root shorter than overlap plus intermediate", ca.Config{TrustDomain: td, Keys: memory.New(), Store: catest.NewStore(), RootTTL: 8 * day}, "root ttl 192h0m0s must be longer"},
	}
	for _, tt := range tests {
		t.Run("rejects "+tt.name, func(t *testing.T) {
			_, err := ca.New(context.Background(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("got %v, want an error containing %q", err, tt.wantMsg)
			}
		})
	}
}

func TestIntermediateAndJWTKeyRotation(t *testing.T) {
	clk := testutil.NewClock(t0)
	f := newFixture(t, clk.Now)
	c := f.ca
	first := active(t, c, ca.KindX509Intermediate)
	firstJWT := active(t, c, ca.KindJWT)
	seq0 := sequence(t, c)

	// Before half-life nothing happens.
	clk.Advance(3 * day)
	tick(t, c)
	if diff := cmp.Diff([]string{"ca.init"}, f.store.Actions()); diff != "" {
		t.Fatalf("actions before half-life (-want +got):\n%s", diff)
	}

	// Past half-life the next intermediate and JWT key are prepared; the JWT key is published.
	clk.Advance(12*time.Hour + time.Minute)
	tick(t, c)
	if diff := cmp.Diff([]string{"ca.init", "ca.prepare", "ca.prepare"}, f.store.Actions()); diff != "" {
		t.Fatalf("actions after half-life (-want +got):\n%s", diff)
	}
	if n := count(c, ca.KindX509Intermediate, ca.StatePrepared); n != 1 {
		t.Errorf("%d prepared intermediates, want 1", n)
	}
	if n := len(c.Bundle().JWTAuthorities()); n != 2 {
		t.Errorf("bundle has %d jwt keys after prepare, want 2", n)
	}
	if n := len(c.Bundle().X509Authorities()); n != 1 {
		t.Errorf("bundle has %d roots, want 1 (intermediates are never published)", n)
	}
	if seq := sequence(t, c); seq <= seq0 {
		t.Errorf("sequence %d did not grow from %d", seq, seq0)
	}

	// Just before 5/6 the old intermediate still signs.
	clk.Set(first.NotBefore.Add(first.NotAfter.Sub(first.NotBefore) * 5 / 6).Add(-time.Minute))
	tick(t, c)
	before := issue(t, c, workload, 24*time.Hour)
	if before[1].Subject.CommonName != mustParse(t, first.CertDER).Subject.CommonName {
		t.Fatalf("signed by %s before 5/6, want the first intermediate", before[1].Subject.CommonName)
	}

	// At 5/6 the prepared ones are activated and the old ones retired.
	clk.Advance(2 * time.Minute)
	tick(t, c)
	if diff := cmp.Diff([]string{"ca.init", "ca.prepare", "ca.prepare", "ca.activate", "ca.activate"}, f.store.Actions()); diff != "" {
		t.Fatalf("actions after 5/6 (-want +got):\n%s", diff)
	}
	second := active(t, c, ca.KindX509Intermediate)
	if second.ID == first.ID || active(t, c, ca.KindJWT).ID == firstJWT.ID {
		t.Fatal("the intermediate or JWT key was not replaced at 5/6")
	}
	for _, a := range c.Authorities() {
		// Transition timestamps are strictly increasing, so the second retirement is a nanosecond later.
		if (a.ID == first.ID || a.ID == firstJWT.ID) && (a.State != ca.StateRetired || a.RetiredAt.Sub(clk.Now()).Abs() > time.Microsecond) {
			t.Errorf("%s %s is %s retired at %s, want retired now", a.Kind, a.ID, a.State, a.RetiredAt)
		}
	}
	after := issue(t, c, workload, 0)
	if after[1].Subject.CommonName != mustParse(t, second.CertDER).Subject.CommonName {
		t.Errorf("signed by %s after 5/6, want the second intermediate", after[1].Subject.CommonName)
	}
	for name, chain := range map[string][]*x509.Certificate{"issued before the switch": before, "issued after the switch": after} {
		if err := verify(t, c, chain, clk.Now()); err != nil {
			t.Errorf("SVID %s does not verify: %v", name, err)
		}
	}

	// The retired JWT key stays in the bundle for MaxJWTSVIDTTL, then leaves it.
	if n := len(c.Bundle().JWTAuthorities()); n != 2 {
		t.Errorf("bundle has %d jwt keys right after activation, want 2", n)
	}
	seq1 := sequence(t, c)
	clk.Advance(time.Hour - time.Second)
	tick(t, c)
	if _, ok := c.Bundle().FindJWTAuthority(firstJWT.ID); !ok {
		t.Error("retired jwt key left the bundle before MaxJWTSVIDTTL")
	}
	clk.Advance(2 * time.Second)
	tick(t, c)
	if _, ok := c.Bundle().FindJWTAuthority(firstJWT.ID); ok {
		t.Error("retired jwt key still in the bundle after MaxJWTSVIDTTL")
	}
	if seq := sequence(t, c); seq <= seq1 {
		t.Errorf("sequence %d did not grow from %d when a key left the bundle", seq, seq1)
	}
	if err := verify(t, c, before, clk.Now()); err != nil {
		t.Errorf("SVID issued before the switch does not verify an hour later: %v", err)
	}
}

func TestRotateNow(t *testing.T) {
	clk := testutil.NewClock(t0)
	f := newFixture(t, clk.Now)
	c := f.ca
	before := issue(t, c, workload, 0)
	oldInter, oldJWT := active(t, c, ca.KindX509Intermediate), active(t, c, ca.KindJWT)
	sub, unsubscribe := c.Subscribe()
	defer unsubscribe()

	if err := c.Rotate(context.Background(), "alice", false); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	select {
	case <-sub:
	default:
		t.Error("subscriber was not signalled")
	}
	calls := f.store.Calls()
	last := calls[len(calls)-1]
	if last.Actor != "alice" || last.Action != "ca.rotate" || len(last.Authorities) != 4 {
		t.Errorf("last store call: actor %q action %q with %d authorities, want alice ca.rotate 4", last.Actor, last.Action, len(last.Authorities))
	}
	if active(t, c, ca.KindX509Intermediate).ID == oldInter.ID || active(t, c, ca.KindJWT).ID == oldJWT.ID {
		t.Error("Rotate did not replace the intermediate and JWT key")
	}
	if err := verify(t, c, before, clk.Now()); err != nil {
		t.Errorf("SVID from before the rotation does not verify: %v", err)
	}
	if err := verify(t, c, issue(t, c, workload, 0), clk.Now()); err != nil {
		t.Errorf("SVID from after the rotation does not verify: %v", err)
	}

	// Rotating again at the same instant still changes the sequence number.
	seq := sequence(t, c)
	if err := c.Rotate(context.Background(), "alice", false); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if got := sequence(t, c); got <= seq {
		t.Errorf("sequence %d did not grow from %d", got, seq)
	}

	<-sub
	unsubscribe()
	if err := c.Rotate(context.Background(), "alice", false); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	select {
	case <-sub:
		t.Error("unsubscribed channel was signalled")
	default:
	}
}

func TestRotateKeepsStateWhenTheStoreFails(t *testing.T) {
	f := newFixture(t, testutil.NewClock(t0).Now)
	before := f.ca.Authorities()
	f.store.SetPutErr(errors.New("disk full"))
	err := f.ca.Rotate(context.Background(), "alice", false)
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Rotate: got %v, want the store error", err)
	}
	if diff := cmp.Diff(before, f.ca.Authorities()); diff != "" {
		t.Errorf("authorities changed although the store failed (-want +got):\n%s", diff)
	}
	f.store.SetPutErr(nil)
	if err := f.ca.Rotate(context.Background(), "alice", false); err != nil {
		t.Errorf("Rotate after the store recovered: %v", err)
	}
}

func TestRootRotation(t *testing.T) {
	clk := testutil.NewClock(t0)
	f := newFixture(t, clk.Now)
	c := f.ca
	oldRoot := active(t, c, ca.KindX509Root)
	onlyOld := x509bundle.FromX509Authorities(td, []*x509.Certificate{mustParse(t, oldRoot.CertDER)})

	clk.Advance(time.Hour)
	if err := c.Rotate(context.Background(), "alice", true); err != nil {
		t.Fatalf("Rotate root: %v", err)
	}
	if err := c.Rotate(context.Background(), "alice", true); !errors.Is(err, ca.ErrInvalidRequest) {
		t.Errorf("second root rotation: got %v, want ErrInvalidRequest", err)
	}
	var newRoot ca.Authority
	for _, a := range c.Authorities() {
		if a.Kind == ca.KindX509Root && a.State == ca.StatePrepared {
			newRoot = a
		}
	}
	if newRoot.ID == "" {
		t.Fatal("no prepared root after Rotate(root)")
	}
	onlyNew := x509bundle.FromX509Authorities(td, []*x509.Certificate{mustParse(t, newRoot.CertDER)})
	if !c.Bundle().HasX509Authority(mustParse(t, newRoot.CertDER)) || len(c.Bundle().X509Authorities()) != 2 {
		t.Error("the prepared root is not published at once")
	}

	// During the overlap SVIDs still chain to the old root.
	clk.Advance(47 * time.Hour)
	tick(t, c)
	old := issue(t, c, workload, 24*time.Hour)
	if _, _, err := x509svid.Verify(old, onlyOld, x509svid.WithTime(clk.Now())); err != nil {
		t.Errorf("SVID issued during the overlap does not chain to the old root: %v", err)
	}

	// After the overlap signing moves to the new root's intermediate.
	clk.Advance(time.Hour)
	tick(t, c)
	actions := f.store.Actions()
	if diff := cmp.Diff([]string{"ca.init", "ca.rotate.root", "ca.activate.root"}, actions); diff != "" {
		t.Errorf("actions (-want +got):\n%s", diff)
	}
	if got := active(t, c, ca.KindX509Root).ID; got != newRoot.ID {
		t.Errorf("active root %s, want %s", got, newRoot.ID)
	}
	fresh := issue(t, c, workload, 0)
	if _, _, err := x509svid.Verify(fresh, onlyNew, x509svid.WithTime(clk.Now())); err != nil {
		t.Errorf("SVID issued after the overlap does not chain to the new root: %v", err)
	}
	if err := verify(t, c, old, clk.Now()); err != nil {
		t.Errorf("SVID signed under the old root no longer verifies against the bundle: %v", err)
	}

	// MaxX509SVIDTTL after its retirement the old root leaves the bundle.
	clk.Advance(24*time.Hour - time.Second)
	tick(t, c)
	if len(c.Bundle().X509Authorities()) != 2 {
		t.Error("old root left the bundle before MaxX509SVIDTTL")
	}
	clk.Advance(time.Second)
	tick(t, c)
	if got := c.Bundle().X509Authorities(); len(got) != 1 || !got[0].Equal(mustParse(t, newRoot.CertDER)) {
		t.Errorf("bundle has %d roots, want only the new one", len(got))
	}
	if err := verify(t, c, old, old[0].NotAfter.Add(-time.Minute)); err == nil {
		t.Error("an SVID under the dropped root still verifies")
	}
}

// TestRotationNeverBreaksVerification simulates 200 days with automatic rotations (including roots) and
// checks at every step that every SVID and JWT-SVID still within its lifetime verifies against the
// current bundle.
func TestRotationNeverBreaksVerification(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, nil, func(cfg *ca.Config) {
			cfg.RootTTL = 30 * day
			cfg.MaxJWTSVIDTTL = 12 * time.Hour
		})
		c := f.ca
		type token struct {
			jwt string
			exp time.Time
		}
		var svids [][]*x509.Certificate
		var tokens []token
		roots := map[string]bool{}
		const stepsPerDay = 4
		for step := 0; step < 200*stepsPerDay; step++ {
			time.Sleep(day / stepsPerDay)
			tick(t, c)
			now := time.Now()
			roots[active(t, c, ca.KindX509Root).ID] = true
			svids = append(svids, issue(t, c, workload, 24*time.Hour))
			jwt, exp, err := c.SignJWTSVID(context.Background(), workload, []string{"a"}, 12*time.Hour)
			if err != nil {
				t.Fatalf("SignJWTSVID: %v", err)
			}
			tokens = append(tokens, token{jwt, exp})
			live := svids[:0]
			for _, chain := range svids {
				if now.After(chain[0].NotAfter) {
					continue
				}
				if err := verify(t, c, chain, now); err != nil {
					t.Fatalf("day %.1f: a live SVID does not verify: %v", float64(step)/stepsPerDay, err)
				}
				live = append(live, chain)
			}
			svids = live
			liveTokens := tokens[:0]
			for _, tok := range tokens {
				if !now.Before(tok.exp) {
					continue
				}
				if _, err := jwtsvid.ParseAndValidate(tok.jwt, c.Bundle(), []string{"a"}); err != nil {
					t.Fatalf("day %.1f: a live JWT-SVID does not validate: %v", float64(step)/stepsPerDay, err)
				}
				liveTokens = append(liveTokens, tok)
			}
			tokens = liveTokens
			if n := len(c.Bundle().X509Authorities()); n > 2 {
				t.Fatalf("bundle has %d roots", n)
			}
		}
		if len(roots) < 8 {
			t.Errorf("%d roots were active over 200 days with a 30-day root ttl, want at least 8", len(roots))
		}
	})
}

func TestRunActivatesTheNextIntermediate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, nil)
		first := active(t, f.ca, ca.KindX509Intermediate)
		sub, unsubscribe := f.ca.Subscribe()
		defer unsubscribe()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- f.ca.Run(ctx) }()

		time.Sleep(time.Until(first.NotBefore.Add(first.NotAfter.Sub(first.NotBefore) / 2).Add(time.Second)))
		synctest.Wait()
		if n := count(f.ca, ca.KindX509Intermediate, ca.StatePrepared); n != 1 {
			t.Errorf("%d prepared intermediates after half-life, want 1", n)
		}
		select {
		case <-sub:
		default:
			t.Error("subscriber not signalled on prepare")
		}

		time.Sleep(time.Until(first.NotBefore.Add(first.NotAfter.Sub(first.NotBefore) * 5 / 6).Add(time.Second)))
		synctest.Wait()
		if got := active(t, f.ca, ca.KindX509Intermediate); got.ID == first.ID {
			t.Error("the first intermediate is still active after 5/6 of its life")
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v", err)
		}
	})
}

func TestJWTKeyRotationKeepsTokensValid(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, nil)
		c := f.ca
		first := active(t, c, ca.KindJWT)
		time.Sleep(time.Until(first.NotBefore.Add(first.NotAfter.Sub(first.NotBefore) / 2)))
		tick(t, c)
		var prepared string
		for _, a := range c.Authorities() {
			if a.Kind == ca.KindJWT && a.State == ca.StatePrepared {
				prepared = a.ID
			}
		}
		if !c.Bundle().HasJWTAuthority(prepared) {
			t.Fatal("prepared JWT key is not published")
		}
		time.Sleep(time.Until(first.NotBefore.Add(first.NotAfter.Sub(first.NotBefore) * 5 / 6).Add(-time.Minute)))
		tick(t, c)
		old, exp, err := c.SignJWTSVID(context.Background(), workload, []string{"a"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Minute)
		tick(t, c)
		if got := active(t, c, ca.KindJWT).ID; got != prepared {
			t.Fatalf("active JWT key %s, want the prepared %s", got, prepared)
		}
		fresh, _, err := c.SignJWTSVID(context.Background(), workload, []string{"a"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		for name, tok := range map[string]string{"minted before the switch": old, "minted after the switch": fresh} {
			if _, err := jwtsvid.ParseAndValidate(tok, c.Bundle(), []string{"a"}); err != nil {
				t.Errorf("token %s does not validate: %v", name, err)
			}
		}
		time.Sleep(time.Until(exp) - time.Second)
		tick(t, c)
		if _, err := jwtsvid.ParseAndValidate(old, c.Bundle(), []string{"a"}); err != nil {
			t.Errorf("token minted before the switch does not validate just before it expires: %v", err)
		}
	})
}

func TestRestartLoadsTheSameAuthorities(t *testing.T) {
	clk := testutil.NewClock(t0)
	store := catest.NewStore()
	dir := t.TempDir()
	open := func() *ca.CA {
		t.Helper()
		keys, err := disk.New(dir)
		if err != nil {
			t.Fatal(err)
		}
		c, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Keys: keys, Store: store, Now: clk.Now})
		if err != nil {
			t.Fatalf("ca.New: %v", err)
		}
		return c
	}
	first := open()
	svid := issue(t, first, workload, 0)
	clk.Advance(time.Hour)
	if err := first.Rotate(context.Background(), "alice", false); err != nil {
		t.Fatal(err)
	}
	if err := first.Rotate(context.Background(), "alice", true); err != nil {
		t.Fatal(err)
	}

	second := open()
	if diff := cmp.Diff(first.Authorities(), second.Authorities()); diff != "" {
		t.Errorf("authorities after restart (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(first.Bundle().X509Authorities(), second.Bundle().X509Authorities()); diff != "" {
		t.Errorf("bundle roots after restart (-want +got):\n%s", diff)
	}
	if a, b := sequence(t, first), sequence(t, second); a != b {
		t.Errorf("sequence %d after restart, was %d", b, a)
	}
	if err := verify(t, second, svid, clk.Now()); err != nil {
		t.Errorf("SVID from before the restart does not verify: %v", err)
	}
	if err := verify(t, second, issue(t, second, workload, 0), clk.Now()); err != nil {
		t.Errorf("SVID from after the restart does not verify: %v", err)
	}
	if _, _, err := second.SignJWTSVID(context.Background(), workload, []string{"a"}, 0); err != nil {
		t.Errorf("SignJWTSVID after restart: %v", err)
	}
}

func TestNewFailsClearlyWhenAKeyIsMissing(t *testing.T) {
	f := newFixture(t, testutil.NewClock(t0).Now)
	_, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Keys: memory.New(), Store: f.store})
	if err == nil || !strings.Contains(err.Error(), "load key") || !strings.Contains(err.Error(), "key not found") {
		t.Errorf("got %v, want a load key error", err)
	}
}

func TestSigningDuringRotation(t *testing.T) {
	clk := testutil.NewClock(t0)
	f := newFixture(t, clk.Now)
	c := f.ca
	csr := makeCSR(t, newKey(t), workload.String())
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				chain, err := c.SignX509SVID(context.Background(), ca.X509SVIDRequest{ID: workload, CSR: csr})
				if err != nil {
					t.Errorf("SignX509SVID: %v", err)
					return
				}
				if err := chain[0].CheckSignatureFrom(chain[1]); err != nil {
					t.Errorf("leaf not signed by the returned intermediate: %v", err)
					return
				}
				if _, _, err := c.SignJWTSVID(context.Background(), workload, []string{"a"}, 0); err != nil {
					t.Errorf("SignJWTSVID: %v", err)
					return
				}
			}
		})
	}
	for range 10 {
		if err := c.Rotate(context.Background(), "alice", false); err != nil {
			t.Error(err)
		}
		_ = c.Bundle()
		_ = c.Authorities()
	}
	close(stop)
	wg.Wait()
}
