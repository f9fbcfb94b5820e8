package catest

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/keymanager/memory"
)

// NewCA returns a CA for td with in-memory keys and a Store; mods adjust its config first.
func NewCA(t testing.TB, td spiffeid.TrustDomain, mods ...func(*ca.Config)) *ca.CA {
	t.Helper()
	cfg := ca.Config{TrustDomain: td, Keys: memory.New(), Store: NewStore()}
	for _, m := range mods {
		m(&cfg)
	}
	c, err := ca.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("new ca: %v", err)
	}
	return c
}

// IssueSVID makes a P-256 key and has c sign an X.509-SVID for it, as an agent would; ttl zero is the
// CA's default. It returns the key and the chain, leaf first.
func IssueSVID(t testing.TB, c *ca.CA, id spiffeid.ID, ttl time.Duration) (*ecdsa.PrivateKey, []*x509.Certificate) {
	t.Helper()
	key, csr, err := ca.NewKeyAndCSR(id)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := c.SignX509SVID(context.Background(), ca.X509SVIDRequest{ID: id, CSR: csr, TTL: ttl})
	if err != nil {
		t.Fatalf("sign x509-svid for %s: %v", id, err)
	}
	return key, chain
}
