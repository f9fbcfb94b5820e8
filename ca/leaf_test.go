package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net/url"
	"testing"
	"time"
)

// createLeaf must encode exactly what x509.CreateCertificate encodes for the same fields.
func TestCreateLeafEncodesLikeTheStandardLibrary(t *testing.T) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{Organization: []string{"Kith"}, CommonName: "intermediate"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	parent, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	kithSubject := mustMarshal(pkix.Name{Organization: []string{"Kith"}}.ToRDNSequence())
	dnsSubject := mustMarshal(pkix.Name{Organization: []string{"Kith"}, CommonName: "api.example.org"}.ToRDNSequence())
	uri, _ := url.Parse("spiffe://example.org/ns/prod/sa/api")
	now := time.Date(2026, 12, 4, 18, 30, 15, 123456789, time.FixedZone("x", 3600))

	tests := []struct {
		name    string
		subject []byte
		pub     crypto.PublicKey
		ku      x509.KeyUsage
		dns     []string
		after   time.Time
	}{
		{"p-256 leaf", kithSubject, &p256.PublicKey, x509.KeyUsageDigitalSignature, nil, now.Add(time.Hour)},
		{"p-384 leaf", kithSubject, &p384.PublicKey, x509.KeyUsageDigitalSignature, nil, now.Add(time.Hour)},
		{"ed25519 leaf", kithSubject, edPub, x509.KeyUsageDigitalSignature, nil, now.Add(time.Hour)},
		{"rsa leaf", kithSubject, &rsaKey.PublicKey, x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, nil, now.Add(time.Hour)},
		{"dns names", dnsSubject, &p256.PublicKey, x509.KeyUsageDigitalSignature, []string{"api.example.org", "api"}, now.Add(time.Hour)},
		{"empty subject: critical SAN", emptyName, &p256.PublicKey, x509.KeyUsageDigitalSignature, nil, now.Add(time.Hour)},
		{"expiry after 2049 (GeneralizedTime)", kithSubject, &p256.PublicKey, x509.KeyUsageDigitalSignature, nil, time.Date(2051, 1, 2, 3, 4, 5, 0, time.UTC)},
		{"decipher-only key usage (two bytes)", kithSubject, &p256.PublicKey, x509.KeyUsageDigitalSignature | x509.KeyUsageDecipherOnly, nil, now.Add(time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := leafFields{serial: randomSerial(), notBefore: now.Add(-time.Minute), notAfter: tt.after, subject: tt.subject,
				publicKey: tt.pub, keyUsage: tt.ku, uri: uri, dnsNames: tt.dns}
			der, err := createLeaf(l, parent, caKey)
			if err != nil {
				t.Fatal(err)
			}
			got, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			stdDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
				SerialNumber: l.serial, RawSubject: tt.subject, NotBefore: l.notBefore, NotAfter: l.notAfter,
				KeyUsage: tt.ku, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
				BasicConstraintsValid: true, URIs: []*url.URL{uri}, DNSNames: tt.dns,
			}, parent, tt.pub, caKey)
			if err != nil {
				t.Fatal(err)
			}
			want, err := x509.ParseCertificate(stdDER)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.RawTBSCertificate, want.RawTBSCertificate) {
				t.Errorf("TBS differs from x509.CreateCertificate's\n got %x\nwant %x", got.RawTBSCertificate, want.RawTBSCertificate)
			}
			if err := got.CheckSignatureFrom(parent); err != nil {
				t.Errorf("signature does not verify: %v", err)
			}
		})
	}
}

// minimalLeaf is a leaf to sign and a parent with just what createLeaf reads.
func minimalLeaf() (leafFields, *x509.Certificate) {
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	parent := &x509.Certificate{RawSubject: mustMarshal(pkix.Name{CommonName: "ca"}.ToRDNSequence()), SubjectKeyId: []byte{1, 2, 3}}
	uri, _ := url.Parse("spiffe://example.org/a")
	return leafFields{serial: big.NewInt(1), notBefore: time.Now(), notAfter: time.Now().Add(time.Hour), subject: emptyName,
		publicKey: &leafKey.PublicKey, keyUsage: x509.KeyUsageDigitalSignature, uri: uri}, parent
}

// A signer whose signatures do not verify is caught on its first use.
func TestCreateLeafRefusesABrokenSigner(t *testing.T) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	l, parent := minimalLeaf()
	if _, err := createLeaf(l, parent, brokenSigner{caKey}); err == nil {
		t.Fatal("a certificate was signed by a signer whose signatures do not verify")
	}
}

// brokenSigner signs with its key but reports another public key.
type brokenSigner struct{ *ecdsa.PrivateKey }

func (b brokenSigner) Public() crypto.PublicKey {
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return &other.PublicKey
}

// A signer outside this process has every signature checked, so one that breaks later is still caught; a
// CA key that is not P-256 is refused.
func TestCreateLeafChecksExternalSignersEveryTime(t *testing.T) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	l, parent := minimalLeaf()
	hsm := &externalSigner{key: caKey, good: true}
	if _, err := createLeaf(l, parent, hsm); err != nil {
		t.Fatalf("a working external signer: %v", err)
	}
	hsm.good = false
	if _, err := createLeaf(l, parent, hsm); err == nil {
		t.Fatal("an external signer that went bad after its first signature was not caught")
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := createLeaf(l, parent, p384); err == nil {
		t.Fatal("signed with a P-384 key under an ecdsa-with-SHA256 algorithm identifier")
	}
}

// externalSigner stands for a hardware or remote key: not an *ecdsa.PrivateKey. Once not good, it returns
// signatures made with another key.
type externalSigner struct {
	key  *ecdsa.PrivateKey
	good bool
}

func (e *externalSigner) Public() crypto.PublicKey { return &e.key.PublicKey }

func (e *externalSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if e.good {
		return e.key.Sign(r, digest, opts)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return other.Sign(r, digest, opts)
}
