package ca

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSelfSignedRootMintsUnderItsRoot(t *testing.T) {
	rootKey := p256(t)
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"},
		NotBefore: stepTime.Add(-time.Hour), NotAfter: stepTime.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	rootCert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	root := &authority{Authority: Authority{ID: "r1", NotAfter: rootCert.NotAfter}, cert: rootCert, signer: rootKey}
	interKey := p256(t)
	req := MintRequest{
		CSR: stepCSR(t, interKey),
		Template: &x509.Certificate{
			SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "inter"},
			NotBefore: stepTime, NotAfter: stepTime.Add(7 * 24 * time.Hour),
			KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
		},
		TTL: 7 * 24 * time.Hour,
	}

	t.Run("signs the csr's key with the template, capped at the root's NotAfter", func(t *testing.T) {
		res, err := selfSignedRoot{root}.MintX509CA(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Chain) != 1 || len(res.Roots) != 1 || !res.Roots[0].Equal(rootCert) {
			t.Fatalf("got %d chain and %d root certificates, want the intermediate and the root", len(res.Chain), len(res.Roots))
		}
		inter := res.Chain[0]
		if err := inter.CheckSignatureFrom(rootCert); err != nil {
			t.Errorf("intermediate is not signed by the root: %v", err)
		}
		got := []any{inter.Subject.CommonName, inter.NotAfter.Equal(rootCert.NotAfter), interKey.PublicKey.Equal(inter.PublicKey)}
		if diff := cmp.Diff([]any{"inter", true, true}, got); diff != "" {
			t.Errorf("common name, capped, key (-want +got):\n%s", diff)
		}
		if !req.Template.NotAfter.Equal(stepTime.Add(7 * 24 * time.Hour)) {
			t.Error("MintX509CA changed the caller's template")
		}
		roots, err := selfSignedRoot{root}.X509Roots(context.Background())
		if err != nil || len(roots) != 1 || !roots[0].Equal(rootCert) {
			t.Errorf("X509Roots = %v, %v; want the root", roots, err)
		}
	})
	t.Run("refuses a root without its key", func(t *testing.T) {
		retired := &authority{Authority: Authority{ID: "r1"}, cert: rootCert}
		if _, err := (selfSignedRoot{retired}).MintX509CA(context.Background(), req); err == nil || !strings.Contains(err.Error(), "root r1 has no key") {
			t.Errorf("got %v, want a missing key error", err)
		}
	})
	t.Run("refuses a csr that is not one", func(t *testing.T) {
		bad := req
		bad.CSR = []byte("nope")
		if _, err := (selfSignedRoot{root}).MintX509CA(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "parse intermediate csr") {
			t.Errorf("got %v, want a csr error", err)
		}
	})
}
