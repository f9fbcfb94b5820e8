package ca_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/catest"
)

// BenchmarkSignX509SVID measures the CA's whole signing path: a P-256 CSR in, a parsed chain out.
func BenchmarkSignX509SVID(b *testing.B) {
	f := newFixture(b, nil)
	req := ca.X509SVIDRequest{ID: workload, CSR: makeCSR(b, newKey(b), workload.String())}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.ca.SignX509SVID(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignX509SVIDUnderUpstream is BenchmarkSignX509SVID with an upstream authority configured (its
// chain one certificate longer): upstream calls are off the signing path, so the two should match.
func BenchmarkSignX509SVIDUnderUpstream(b *testing.B) {
	f := newFixture(b, nil, withUpstream(catest.NewUpstream(b, nil)))
	req := ca.X509SVIDRequest{ID: workload, CSR: makeCSR(b, newKey(b), workload.String())}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.ca.SignX509SVID(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignX509SVIDReference is the floor set by the standard library: parse and check the CSR, build a
// minimal template, sign it with the same intermediate key and parse the result.
func BenchmarkSignX509SVIDReference(b *testing.B) {
	f := newFixture(b, nil)
	inter := active(b, f.ca, ca.KindX509Intermediate)
	parent := mustParse(b, inter.CertDER)
	signer, err := f.keys.GetKey(context.Background(), inter.KeyID)
	if err != nil {
		b.Fatal(err)
	}
	csrDER := makeCSR(b, newKey(b), workload.String())
	uri, _ := url.Parse(workload.String())
	b.ReportAllocs()
	for b.Loop() {
		csr, err := x509.ParseCertificateRequest(csrDER)
		if err != nil {
			b.Fatal(err)
		}
		if err := csr.CheckSignature(); err != nil {
			b.Fatal(err)
		}
		var serial [16]byte
		_, _ = rand.Read(serial[:])
		now := time.Now()
		tmpl := &x509.Certificate{
			SerialNumber: new(big.Int).SetBytes(serial[:]),
			NotBefore:    now,
			NotAfter:     now.Add(time.Hour),
			URIs:         []*url.URL{uri},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, csr.PublicKey, signer)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := x509.ParseCertificate(der); err != nil {
			b.Fatal(err)
		}
	}
}
