package ca

import (
	"crypto/x509"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestNewKeyAndCSR(t *testing.T) {
	for _, tt := range []struct {
		name string
		id   spiffeid.ID
		uris int
	}{
		{"a named request carries the id as its only URI SAN", spiffeid.RequireFromString("spiffe://example.org/app"), 1},
		{"an unnamed request carries no URI SAN", spiffeid.ID{}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			key, der, err := NewKeyAndCSR(tt.id)
			if err != nil {
				t.Fatal(err)
			}
			csr, err := x509.ParseCertificateRequest(der)
			if err != nil {
				t.Fatal(err)
			}
			if err := csr.CheckSignature(); err != nil {
				t.Errorf("signature: %v", err)
			}
			if !key.PublicKey.Equal(csr.PublicKey) {
				t.Error("csr is not for the returned key")
			}
			if len(csr.URIs) != tt.uris || (tt.uris == 1 && csr.URIs[0].String() != tt.id.String()) {
				t.Errorf("uris = %v, want %d naming %s", csr.URIs, tt.uris, tt.id)
			}
		})
	}
}

func BenchmarkNewKeyAndCSR(b *testing.B) {
	id := spiffeid.RequireFromString("spiffe://example.org/app")
	for b.Loop() {
		if _, _, err := NewKeyAndCSR(id); err != nil {
			b.Fatal(err)
		}
	}
}
