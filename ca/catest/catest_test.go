package catest_test

import (
	"context"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/catest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestStore(t *testing.T) {
	ctx := context.Background()
	s := catest.NewStore()
	a := ca.Authority{ID: "a", Kind: ca.KindJWT, State: ca.StatePrepared}
	if err := s.PutAuthorities(ctx, "alice", "ca.prepare", []ca.Authority{a}); err != nil {
		t.Fatal(err)
	}
	a.State = ca.StateActive
	if err := s.PutAuthorities(ctx, "alice", "ca.activate", []ca.Authority{a}); err != nil {
		t.Fatal(err)
	}
	s.SetPutErr(errors.New("boom"))
	if err := s.PutAuthorities(ctx, "alice", "ca.rotate", nil); err == nil {
		t.Error("PutAuthorities succeeded with an injected error")
	}
	got, err := s.ListAuthorities(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]ca.Authority{a}, got); diff != "" {
		t.Errorf("authorities (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"ca.prepare", "ca.activate"}, s.Actions()); diff != "" {
		t.Errorf("actions (-want +got):\n%s", diff)
	}
}

func TestUpstream(t *testing.T) {
	ctx := context.Background()
	up := catest.NewUpstream(t, nil)
	key, csr, err := ca.NewKeyAndCSR(spiffeid.RequireTrustDomainFromString("example.org").ID())
	if err != nil {
		t.Fatal(err)
	}
	res, err := up.MintX509CA(ctx, ca.MintRequest{CSR: csr, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(up.Roots()[0])
	inters := x509.NewCertPool()
	inters.AddCert(res.Chain[1])
	if _, err := res.Chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("minted certificate does not verify to the root: %v", err)
	}
	if !key.PublicKey.Equal(res.Chain[0].PublicKey) || !res.Chain[0].IsCA {
		t.Error("minted certificate is not a CA certificate for the CSR's key")
	}
	if got := res.Chain[0].NotAfter.Sub(res.Chain[0].NotBefore); got != time.Hour+time.Minute {
		t.Errorf("minted lifetime %s, want the ttl plus a minute of backdating", got)
	}

	old := up.Roots()[0]
	next := up.RotateRoot(t)
	up.DropRoot(old)
	roots, err := up.X509Roots(ctx)
	if err != nil || len(roots) != 1 || !roots[0].Equal(next) {
		t.Errorf("X509Roots after rotating and dropping = %d roots, %v; want only the new one", len(roots), err)
	}
	boom := errors.New("boom")
	up.SetMintErr(boom)
	up.SetRootsErr(boom)
	if _, err := up.MintX509CA(ctx, ca.MintRequest{CSR: csr, TTL: time.Hour}); !errors.Is(err, boom) {
		t.Errorf("MintX509CA: got %v, want the injected error", err)
	}
	if _, err := up.X509Roots(ctx); !errors.Is(err, boom) {
		t.Errorf("X509Roots: got %v, want the injected error", err)
	}
	if n := len(up.Mints()); n != 1 {
		t.Errorf("%d mints recorded, want 1", n)
	}
}
