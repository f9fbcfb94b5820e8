package ca_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"net/url"
	"testing"
	"time"

	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/catest"
	"github.com/kithid/kith/ca/keymanager/memory"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("example.org")
	workload = spiffeid.RequireFromString("spiffe://example.org/ns/prod/sa/payments")
	t0       = time.Date(2031, 3, 1, 12, 0, 0, 0, time.UTC)
)

type fixture struct {
	ca    *ca.CA
	store *catest.Store
	keys  ca.KeyManager
	cfg   ca.Config
}

// newFixture returns a CA on a fake store and a memory key manager; now may be nil for time.Now.
func newFixture(t testing.TB, now func() time.Time, mods ...func(*ca.Config)) *fixture {
	t.Helper()
	cfg := ca.Config{TrustDomain: td, Keys: memory.New(), Store: catest.NewStore(), Now: now}
	for _, m := range mods {
		m(&cfg)
	}
	c, err := ca.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("ca.New: %v", err)
	}
	return &fixture{ca: c, store: cfg.Store.(*catest.Store), keys: cfg.Keys, cfg: cfg}
}

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// makeCSR returns a DER CSR for key with the given URI SANs.
func makeCSR(t testing.TB, key crypto.Signer, uris ...string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	for _, u := range uris {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatalf("create csr: %v", err)
	}
	return der
}

// issue signs an X.509-SVID for id with a fresh P-256 key.
func issue(t testing.TB, c *ca.CA, id spiffeid.ID, ttl time.Duration) []*x509.Certificate {
	t.Helper()
	chain, err := c.SignX509SVID(context.Background(), ca.X509SVIDRequest{ID: id, CSR: makeCSR(t, newKey(t), id.String()), TTL: ttl})
	if err != nil {
		t.Fatalf("SignX509SVID: %v", err)
	}
	return chain
}

// verify checks chain against the CA's current bundle at time at.
func verify(t testing.TB, c *ca.CA, chain []*x509.Certificate, at time.Time) error {
	t.Helper()
	id, _, err := x509svid.Verify(chain, c.Bundle(), x509svid.WithTime(at))
	if err != nil {
		return err
	}
	if id.String() != chain[0].URIs[0].String() {
		t.Errorf("verified id %s, want %s", id, chain[0].URIs[0])
	}
	return nil
}

// active returns the active authority of kind.
func active(t testing.TB, c *ca.CA, kind ca.AuthorityKind) ca.Authority {
	t.Helper()
	for _, a := range c.Authorities() {
		if a.Kind == kind && a.State == ca.StateActive {
			return a
		}
	}
	t.Fatalf("no active %s authority", kind)
	return ca.Authority{}
}

// count returns how many authorities of kind are in state.
func count(c *ca.CA, kind ca.AuthorityKind, state ca.AuthorityState) int {
	n := 0
	for _, a := range c.Authorities() {
		if a.Kind == kind && a.State == state {
			n++
		}
	}
	return n
}

func mustParse(t testing.TB, der []byte) *x509.Certificate {
	t.Helper()
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
