package ca_test

import (
	"context"
	"crypto"
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
	"github.com/kithid/kith/ca/keymanager/memory"
	"github.com/kithid/kith/internal/testutil"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// withUpstream makes the fixture's CA sit under u.
func withUpstream(u ca.UpstreamAuthority) func(*ca.Config) {
	return func(cfg *ca.Config) { cfg.Upstream = u }
}

// verifyUpstream checks chain against a bundle of exactly roots at time at.
func verifyUpstream(chain []*x509.Certificate, roots []*x509.Certificate, at time.Time) error {
	_, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, roots), x509svid.WithTime(at))
	return err
}

func TestUpstreamSignsTheIntermediate(t *testing.T) {
	clk := testutil.NewClock(t0)
	up := catest.NewUpstream(t, clk.Now)
	f := newFixture(t, clk.Now, withUpstream(up))
	c := f.ca

	var kinds []string
	for _, a := range c.Authorities() {
		kinds = append(kinds, string(a.Kind)+"/"+string(a.State))
	}
	if diff := cmp.Diff([]string{"x509-root/active", "x509-intermediate/active", "jwt/active"}, kinds); diff != "" {
		t.Errorf("authorities (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"ca.init"}, f.store.Actions()); diff != "" {
		t.Errorf("store actions (-want +got):\n%s", diff)
	}
	root, inter := active(t, c, ca.KindX509Root), active(t, c, ca.KindX509Intermediate)
	if root.KeyID != "" || !mustParse(t, root.CertDER).Equal(up.Roots()[0]) {
		t.Errorf("root authority %+v is not the upstream's root without a key", root)
	}
	if inter.ParentID != root.ID {
		t.Errorf("intermediate parent %q, want the upstream root %q", inter.ParentID, root.ID)
	}

	mints := up.Mints()
	if len(mints) != 1 {
		t.Fatalf("%d mints, want 1", len(mints))
	}
	csr, err := x509.ParseCertificateRequest(mints[0].CSR)
	if err != nil {
		t.Fatal(err)
	}
	interCerts, err := x509.ParseCertificates(inter.CertDER)
	if err != nil {
		t.Fatal(err)
	}
	type mint struct {
		TTL        time.Duration
		CSRURIs    string
		KeyMatches bool
		TmplIsCA   bool
		Stored     int
	}
	got := mint{mints[0].TTL, csr.URIs[0].String(), interCerts[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(csr.PublicKey),
		mints[0].Template.IsCA, len(interCerts)}
	if diff := cmp.Diff(mint{7 * day, "spiffe://example.org", true, true, 2}, got); diff != "" {
		t.Errorf("mint request and stored chain (-want +got):\n%s", diff)
	}

	if diff := cmp.Diff(up.Roots(), c.Bundle().X509Authorities()); diff != "" {
		t.Errorf("bundle roots are not the upstream's (-want +got):\n%s", diff)
	}
	chain := issue(t, c, workload, 0)
	if len(chain) != 3 || !chain[1].Equal(interCerts[0]) || !chain[2].Equal(up.Intermediate()) {
		t.Fatalf("svid chain has %d certificates, want the leaf, the ca's intermediate and the upstream's", len(chain))
	}
	if err := verifyUpstream(chain, up.Roots(), clk.Now()); err != nil {
		t.Errorf("svid does not verify against the upstream roots: %v", err)
	}
	if err := verify(t, c, chain, clk.Now()); err != nil {
		t.Errorf("svid does not verify against the ca's bundle: %v", err)
	}
	if err := c.Rotate(context.Background(), "alice", true); !errors.Is(err, ca.ErrInvalidRequest) || !strings.Contains(err.Error(), "upstream") {
		t.Errorf("root rotation under an upstream: got %v, want an invalid request naming the upstream", err)
	}
}

func TestUpstreamMintsEveryIntermediate(t *testing.T) {
	clk := testutil.NewClock(t0)
	up := catest.NewUpstream(t, clk.Now)
	f := newFixture(t, clk.Now, withUpstream(up))
	c := f.ca
	first := active(t, c, ca.KindX509Intermediate)
	before := issue(t, c, workload, 0)

	// Automatic rotation: prepared at half-life, activated at 5/6.
	clk.Set(first.NotBefore.Add(first.NotAfter.Sub(first.NotBefore) / 2))
	tick(t, c)
	clk.Set(first.NotBefore.Add(first.NotAfter.Sub(first.NotBefore) * 5 / 6))
	tick(t, c)
	if diff := cmp.Diff([]string{"ca.init", "ca.prepare", "ca.prepare", "ca.activate", "ca.activate"}, f.store.Actions()); diff != "" {
		t.Errorf("store actions (-want +got):\n%s", diff)
	}
	// Rotation on demand.
	if err := c.Rotate(context.Background(), "alice", false); err != nil {
		t.Fatal(err)
	}
	if n := len(up.Mints()); n != 3 {
		t.Errorf("%d mints, want 3: init, prepare, rotate", n)
	}
	after := issue(t, c, workload, 0)
	if after[1].Equal(before[1]) {
		t.Error("the intermediate did not change")
	}
	for name, chain := range map[string][]*x509.Certificate{"before": before, "after": after} {
		if err := verifyUpstream(chain, up.Roots(), chain[0].NotAfter.Add(-time.Minute)); err != nil {
			t.Errorf("svid from %s the rotations does not verify: %v", name, err)
		}
	}
}

func TestUpstreamRootChangesArePublished(t *testing.T) {
	clk := testutil.NewClock(t0)
	up := catest.NewUpstream(t, clk.Now)
	f := newFixture(t, clk.Now, withUpstream(up))
	c := f.ca
	oldRoot := up.Roots()[0]
	old := issue(t, c, workload, 24*time.Hour)
	seq := sequence(t, c)

	// A new upstream root is published at the next Tick.
	clk.Advance(time.Minute)
	newRoot := up.RotateRoot(t)
	tick(t, c)
	if diff := cmp.Diff([]*x509.Certificate{oldRoot, newRoot}, c.Bundle().X509Authorities()); diff != "" {
		t.Errorf("bundle roots after the upstream rotated (-want +got):\n%s", diff)
	}
	if got := sequence(t, c); got <= seq {
		t.Errorf("sequence %d did not grow from %d", got, seq)
	}
	if got := f.store.Actions(); got[len(got)-1] != "ca.upstream.roots" {
		t.Errorf("last store action %q, want ca.upstream.roots", got[len(got)-1])
	}

	// The upstream drops the old root while the active intermediate chains to it: the CA keeps it.
	up.DropRoot(oldRoot)
	clk.Advance(time.Minute)
	tick(t, c)
	if n := len(c.Bundle().X509Authorities()); n != 2 {
		t.Fatalf("bundle has %d roots, want the old one kept while its intermediate signs", n)
	}

	// Once the CA moves to an intermediate under the new root, the old root is retired, stays published
	// for MaxX509SVIDTTL, then leaves.
	if err := c.Rotate(context.Background(), "alice", false); err != nil {
		t.Fatal(err)
	}
	fresh := issue(t, c, workload, 0)
	if err := verifyUpstream(fresh, []*x509.Certificate{newRoot}, clk.Now()); err != nil {
		t.Errorf("svid after the rotation does not chain to the new root: %v", err)
	}
	tick(t, c)
	if n := count(c, ca.KindX509Root, ca.StateRetired); n != 1 {
		t.Errorf("%d retired roots, want the old one", n)
	}
	if err := verify(t, c, old, clk.Now()); err != nil {
		t.Errorf("svid under the retired root does not verify during MaxX509SVIDTTL: %v", err)
	}
	clk.Advance(24*time.Hour + time.Second)
	tick(t, c)
	if diff := cmp.Diff([]*x509.Certificate{newRoot}, c.Bundle().X509Authorities()); diff != "" {
		t.Errorf("bundle roots after MaxX509SVIDTTL (-want +got):\n%s", diff)
	}
}

func TestUpstreamRestartLoadsTheSameAuthorities(t *testing.T) {
	clk := testutil.NewClock(t0)
	up := catest.NewUpstream(t, clk.Now)
	store, keys := catest.NewStore(), memory.New()
	open := func(u ca.UpstreamAuthority) (*ca.CA, error) {
		return ca.New(context.Background(), ca.Config{TrustDomain: td, Keys: keys, Store: store, Now: clk.Now, Upstream: u})
	}
	first, err := open(up)
	if err != nil {
		t.Fatal(err)
	}
	svid := issue(t, first, workload, 0)
	up.SetRootsErr(errors.New("upstream unreachable"))
	up.SetMintErr(errors.New("upstream unreachable"))

	second, err := open(up)
	if err != nil {
		t.Fatalf("restart with the upstream unreachable: %v", err)
	}
	if diff := cmp.Diff(first.Authorities(), second.Authorities()); diff != "" {
		t.Errorf("authorities after restart (-want +got):\n%s", diff)
	}
	if a, b := sequence(t, first), sequence(t, second); a != b {
		t.Errorf("sequence %d after restart, was %d", b, a)
	}
	again := issue(t, second, workload, 0)
	if len(again) != 3 {
		t.Errorf("svid chain after restart has %d certificates, want 3", len(again))
	}
	for name, chain := range map[string][]*x509.Certificate{"before": svid, "after": again} {
		if err := verifyUpstream(chain, up.Roots(), clk.Now()); err != nil {
			t.Errorf("svid from %s the restart does not verify: %v", name, err)
		}
	}
	if err := second.Tick(context.Background()); err == nil || !strings.Contains(err.Error(), "upstream unreachable") {
		t.Errorf("Tick with the upstream unreachable: got %v, want its error", err)
	}

	// Opening the store without the upstream, or a self-signed CA's store with one, starts a switch
	// between the two: TestSwitchBetweenSelfSignedAndUpstream.
}

func TestUpstreamFailures(t *testing.T) {
	boom := errors.New("boom")
	t.Run("New fails when the upstream cannot mint", func(t *testing.T) {
		up := catest.NewUpstream(t, nil)
		up.SetMintErr(boom)
		_, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Keys: memory.New(), Store: catest.NewStore(), Upstream: up})
		if !errors.Is(err, boom) || !strings.Contains(err.Error(), "upstream authority") {
			t.Errorf("got %v, want the mint error from the upstream authority", err)
		}
	})
	t.Run("New fails when the upstream has no roots to give", func(t *testing.T) {
		up := catest.NewUpstream(t, nil)
		up.SetRootsErr(boom)
		_, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Keys: memory.New(), Store: catest.NewStore(), Upstream: up})
		if !errors.Is(err, boom) {
			t.Errorf("got %v, want the roots error", err)
		}
	})
	t.Run("Rotate keeps the state when the upstream cannot mint", func(t *testing.T) {
		up := catest.NewUpstream(t, nil)
		f := newFixture(t, nil, withUpstream(up))
		before := f.ca.Authorities()
		up.SetMintErr(boom)
		if err := f.ca.Rotate(context.Background(), "alice", false); !errors.Is(err, boom) {
			t.Errorf("Rotate: got %v, want the mint error", err)
		}
		if diff := cmp.Diff(before, f.ca.Authorities()); diff != "" {
			t.Errorf("authorities changed (-want +got):\n%s", diff)
		}
	})
}

// lyingUpstream mints through the embedded upstream and then spoils the result.
type lyingUpstream struct {
	*catest.Upstream
	spoil func(t testing.TB, res *ca.MintResult)
	t     testing.TB
}

func (l lyingUpstream) MintX509CA(ctx context.Context, req ca.MintRequest) (ca.MintResult, error) {
	res, err := l.Upstream.MintX509CA(ctx, req)
	if err == nil {
		l.spoil(l.t, &res)
	}
	return res, err
}

func TestUpstreamResultsAreChecked(t *testing.T) {
	tests := []struct {
		name  string
		spoil func(t testing.TB, res *ca.MintResult)
		want  string
	}{
		{"an empty chain", func(_ testing.TB, r *ca.MintResult) { r.Chain = nil }, "mint returned no certificate"},
		{"a certificate for another key", func(_ testing.TB, r *ca.MintResult) { r.Chain[0] = r.Chain[1] }, "not for the intermediate's key"},
		{"a chain out of order", func(_ testing.TB, r *ca.MintResult) { r.Chain = append(r.Chain, r.Chain[1]) }, "certificate 1 is not signed by certificate 2"},
		{"a chain that does not end at the roots", func(t testing.TB, r *ca.MintResult) {
			r.Roots = catest.NewUpstream(t, nil).Roots()
		}, "does not end at any of the roots"},
	}
	for _, tt := range tests {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			up := lyingUpstream{Upstream: catest.NewUpstream(t, nil), spoil: tt.spoil, t: t}
			_, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Keys: memory.New(), Store: catest.NewStore(), Upstream: up})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestUpstreamRotationsNeverBreakVerification simulates 60 days under an upstream that rotates its root on
// day 20 and stops returning the old one on day 21, and checks at every step that every SVID still within
// its lifetime verifies against the CA's bundle.
func TestUpstreamRotationsNeverBreakVerification(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := catest.NewUpstream(t, nil)
		f := newFixture(t, nil, withUpstream(up))
		c := f.ca
		const stepsPerDay = 4
		var svids [][]*x509.Certificate
		oldRoot := up.Roots()[0]
		for step := 0; step < 60*stepsPerDay; step++ {
			time.Sleep(day / stepsPerDay)
			switch step {
			case 20 * stepsPerDay:
				up.RotateRoot(t)
			case 21 * stepsPerDay:
				up.DropRoot(oldRoot)
			}
			tick(t, c)
			now := time.Now()
			svids = append(svids, issue(t, c, workload, 24*time.Hour))
			live := svids[:0]
			for _, chain := range svids {
				if now.After(chain[0].NotAfter) {
					continue
				}
				if err := verify(t, c, chain, now); err != nil {
					t.Fatalf("day %.2f: a live SVID does not verify: %v", float64(step)/stepsPerDay, err)
				}
				live = append(live, chain)
			}
			svids = live
		}
		if diff := cmp.Diff(up.Roots(), c.Bundle().X509Authorities()); diff != "" {
			t.Errorf("bundle roots at the end are not the upstream's (-want +got):\n%s", diff)
		}
		if n := len(up.Mints()); n < 60/7*2 {
			t.Errorf("%d intermediates minted in 60 days, want at least %d", n, 60/7*2)
		}
	})
}

// attemptsUpstream records when MintX509CA was called, successful or not.
type attemptsUpstream struct {
	*catest.Upstream
	mu    sync.Mutex
	times []time.Time
}

func (a *attemptsUpstream) MintX509CA(ctx context.Context, req ca.MintRequest) (ca.MintResult, error) {
	a.mu.Lock()
	a.times = append(a.times, time.Now())
	a.mu.Unlock()
	return a.Upstream.MintX509CA(ctx, req)
}

func (a *attemptsUpstream) reset() {
	a.mu.Lock()
	a.times = nil
	a.mu.Unlock()
}

func (a *attemptsUpstream) gaps() []time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []time.Duration
	for i := 1; i < len(a.times); i++ {
		out = append(out, a.times[i].Sub(a.times[i-1]).Round(time.Second))
	}
	return out
}

// TestUpstreamDownKeepsTheIntermediateAndBacksOff takes the upstream down just before the intermediate is
// due to be prepared: the CA keeps signing with the current one, retries 1 s, 2 s, 4 s … capped at
// UpstreamRetryMax, reports the failures in Status, recovers within the cap once the upstream is back,
// and never signs an SVID past the intermediate.
func TestUpstreamDownKeepsTheIntermediateAndBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := &attemptsUpstream{Upstream: catest.NewUpstream(t, nil)}
		f := newFixture(t, nil, withUpstream(up), func(c *ca.Config) {
			c.UpstreamName, c.UpstreamRetryMax = "test upstream", 16*time.Second
		})
		c := f.ca
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- c.Run(ctx) }()
		defer func() { cancel(); <-done }()

		inter := active(t, c, ca.KindX509Intermediate)
		prepare := inter.NotBefore.Add(inter.NotAfter.Sub(inter.NotBefore) / 2)
		time.Sleep(time.Until(prepare) - time.Minute)
		up.SetMintErr(errors.New("connection refused"))
		up.reset() // only the attempts from now on
		time.Sleep(2*time.Minute + 30*time.Second)
		synctest.Wait()

		got := up.gaps()
		want := []time.Duration{1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 16 * time.Second}
		if len(got) < len(want) || !cmp.Equal(want, got[:len(want)]) {
			t.Errorf("waits between mint attempts %v, want %v then the cap", got, want)
		}
		for _, g := range got[len(want):] {
			if g != 16*time.Second {
				t.Errorf("wait %s after the cap was reached, want 16s", g)
			}
		}
		st := c.Status()
		if st.Upstream == nil {
			t.Fatal("Status has no upstream")
		}
		u := st.Upstream
		if u.Name != "test upstream" || u.Failures < 6 || u.Errors != uint64(len(got)+1) || !strings.Contains(u.LastError, "connection refused") ||
			u.RetryAt.Before(time.Now()) || u.RetryAt.After(time.Now().Add(16*time.Second)) {
			t.Errorf("upstream status %+v, want the failures counted, the error and a retry within the cap", u)
		}
		if st.IntermediateID != inter.ID || !st.IntermediateNotAfter.Equal(inter.NotAfter) {
			t.Errorf("status intermediate %s (until %s), want the current one %s kept", st.IntermediateID, st.IntermediateNotAfter, inter.ID)
		}
		chain := issue(t, c, workload, 24*time.Hour)
		if !chain[1].Equal(mustParse(t, inter.CertDER[:len(chain[1].Raw)])) {
			t.Error("the CA stopped signing with its current intermediate while the upstream was down")
		}

		// The upstream comes back: the next retry, within the cap, prepares the intermediate.
		up.SetMintErr(nil)
		back := time.Now()
		for count(c, ca.KindX509Intermediate, ca.StatePrepared) == 0 {
			time.Sleep(time.Second)
		}
		if took := time.Since(back); took > 16*time.Second {
			t.Errorf("prepared %s after the upstream came back, want within the 16s cap", took)
		}
		if st := c.Status(); st.Upstream.Failures != 0 || !st.Upstream.RetryAt.IsZero() || st.Upstream.LastError == "" {
			t.Errorf("status after recovery %+v, want no failures, no retry, the last error kept", st.Upstream)
		}
	})
}

// TestUpstreamDownToTheEndNeverOutlivesTheIntermediate keeps the upstream down until the intermediate
// expires: every SVID is capped at its NotAfter, and none is signed after it.
func TestUpstreamDownToTheEndNeverOutlivesTheIntermediate(t *testing.T) {
	clk := testutil.NewClock(t0)
	up := catest.NewUpstream(t, clk.Now)
	f := newFixture(t, clk.Now, withUpstream(up))
	c := f.ca
	inter := active(t, c, ca.KindX509Intermediate)
	up.SetMintErr(errors.New("connection refused"))
	for _, at := range []time.Time{inter.NotAfter.Add(-23 * time.Hour), inter.NotAfter.Add(-time.Hour), inter.NotAfter.Add(-time.Second)} {
		clk.Set(at)
		if err := c.Tick(context.Background()); err == nil {
			t.Fatal("Tick with the upstream down: no error")
		}
		chain := issue(t, c, workload, 24*time.Hour)
		if chain[0].NotAfter.After(inter.NotAfter) {
			t.Errorf("at %s: svid until %s outlives its intermediate (%s)", at, chain[0].NotAfter, inter.NotAfter)
		}
	}
	clk.Set(inter.NotAfter.Add(time.Second))
	_, err := c.SignX509SVID(context.Background(), ca.X509SVIDRequest{ID: workload, CSR: makeCSR(t, newKey(t), workload.String())})
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("signing after the intermediate expired: got %v, want an expiry error", err)
	}
}
