package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"

	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/catest"
	"github.com/kithid/kith/ca/keymanager/memory"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func Example() {
	ctx := context.Background()
	c, err := ca.New(ctx, ca.Config{
		TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		Keys:        memory.New(),      // keymanager/disk in production
		Store:       catest.NewStore(), // the server's store in production
	})
	if err != nil {
		panic(err)
	}

	// The workload makes its own key and sends only a CSR.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)

	id := spiffeid.RequireFromString("spiffe://example.org/ns/prod/sa/payments")
	chain, err := c.SignX509SVID(ctx, ca.X509SVIDRequest{ID: id, CSR: csr})
	if err != nil {
		panic(err)
	}
	verified, _, err := x509svid.Verify(chain, c.Bundle())
	fmt.Println(verified, err, chain[0].NotAfter.Sub(chain[0].NotBefore))
	// Output: spiffe://example.org/ns/prod/sa/payments <nil> 1h1m0s
}
