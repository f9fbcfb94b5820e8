package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	stepTD   = spiffeid.RequireTrustDomainFromString("example.org")
	stepID   = spiffeid.RequireFromString("spiffe://example.org/web")
	stepTime = time.Date(2031, 3, 1, 12, 0, 0, 0, time.UTC)
)

// wantStepErr checks err against want: "" means no error; otherwise err must contain want and, when
// invalid is true, wrap ErrInvalidRequest.
func wantStepErr(t *testing.T, err error, want string, invalid bool) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("got error %v, want none", err)
	case want == "":
	case err == nil || !strings.Contains(err.Error(), want):
		t.Fatalf("got error %v, want one containing %q", err, want)
	case errors.Is(err, ErrInvalidRequest) != invalid:
		t.Fatalf("error %v: wraps ErrInvalidRequest %v, want %v", err, !invalid, invalid)
	}
}

func stepCSR(t *testing.T, key crypto.Signer, uris ...string) []byte {
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
		t.Fatal(err)
	}
	return der
}

func p256(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestIDInTrustDomain(t *testing.T) {
	tests := []struct {
		name, id, want string
	}{
		{"accepts an id in the trust domain", "spiffe://example.org/web", ""},
		{"rejects a missing id", "", "spiffe id is required"},
		{"rejects an id in another trust domain", "spiffe://other.org/web", `spiffe id "spiffe://other.org/web" is not in trust domain "example.org"`},
		{"rejects the trust domain itself", "spiffe://example.org", "is the trust domain itself; a workload id needs a path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var id spiffeid.ID
			if tt.id != "" {
				id = spiffeid.RequireFromString(tt.id)
			}
			v := idInTrustDomain{stepTD}
			wantStepErr(t, v.x509(&x509Issuance{req: X509SVIDRequest{ID: id}}), tt.want, true)
			wantStepErr(t, v.jwt(&jwtIssuance{id: id}), tt.want, true)
		})
	}
}

func TestSVIDTTL(t *testing.T) {
	v := svidTTL{def: time.Hour, min: time.Minute, max: 24 * time.Hour}
	tests := []struct {
		name    string
		ttl     time.Duration
		wantTTL time.Duration
		want    string
	}{
		{"uses the default for zero", 0, time.Hour, ""},
		{"keeps a ttl at the minimum", time.Minute, time.Minute, ""},
		{"keeps a ttl at the maximum", 24 * time.Hour, 24 * time.Hour, ""},
		{"rejects a ttl below the minimum", time.Second, 0, "ttl 1s is out of bounds: ask for 0 (default 1h0m0s) or between 1m0s and 24h0m0s"},
		{"rejects a ttl above the maximum", 25 * time.Hour, 0, "ttl 25h0m0s is out of bounds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			xi := &x509Issuance{req: X509SVIDRequest{TTL: tt.ttl}}
			wantStepErr(t, v.x509(xi), tt.want, true)
			ji := &jwtIssuance{ttl: tt.ttl}
			wantStepErr(t, v.jwt(ji), tt.want, true)
			if diff := cmp.Diff([]time.Duration{tt.wantTTL, tt.wantTTL}, []time.Duration{xi.ttl, ji.ttl}); diff != "" {
				t.Errorf("ttl (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDNSNameSyntax(t *testing.T) {
	tests := []struct {
		name  string
		names []string
		want  string
	}{
		{"accepts no names", nil, ""},
		{"accepts names and a leading wildcard", []string{"web.example.org", "*.svc", "a-b.c9"}, ""},
		{"rejects an empty name", []string{"ok.org", ""}, `dns name "" is invalid: empty`},
		{"rejects a name over 253 characters", []string{strings.Repeat("a.", 127)}, "longer than 253 characters"},
		{"rejects an empty label", []string{"a..b"}, "each label must have 1 to 63 characters"},
		{"rejects a wildcard alone", []string{"*"}, "only letters, digits, hyphens"},
		{"rejects a wildcard not first", []string{"a.*.b"}, "only letters, digits, hyphens"},
		{"rejects a label starting with a hyphen", []string{"-a.org"}, "may not start or end with a hyphen"},
		{"rejects an underscore", []string{"a_b.org"}, `only letters, digits, hyphens and a leading "*." are allowed`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantStepErr(t, dnsNameSyntax{}.x509(&x509Issuance{req: X509SVIDRequest{DNSNames: tt.names}}), tt.want, true)
		})
	}
}

func TestCSRDERAndSignature(t *testing.T) {
	good := stepCSR(t, p256(t))
	badSig := append([]byte(nil), good...)
	badSig[len(badSig)-1] ^= 0xff
	tests := []struct {
		name    string
		csr     []byte
		wantDER string
		wantSig string
	}{
		{"accepts a signed csr", good, "", ""},
		{"rejects bytes that are not a csr", []byte("nope"), "csr is not a valid DER PKCS#10 request", ""},
		{"rejects a csr whose signature does not verify", badSig, "", "csr signature is invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := &x509Issuance{req: X509SVIDRequest{CSR: tt.csr}}
			err := csrDER{}.x509(is)
			wantStepErr(t, err, tt.wantDER, true)
			if err != nil {
				return
			}
			if is.csr == nil {
				t.Fatal("csrDER set no csr")
			}
			wantStepErr(t, csrSignature{}.x509(is), tt.wantSig, true)
		})
	}
}

func TestLeafKeyPolicy(t *testing.T) {
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		name      string
		pub       crypto.PublicKey
		wantUsage x509.KeyUsage
		want      string
	}{
		{"accepts P-256 for signing", p256(t).Public(), x509.KeyUsageDigitalSignature, ""},
		{"accepts P-384 for signing", p384.Public(), x509.KeyUsageDigitalSignature, ""},
		{"accepts Ed25519 for signing", edPub, x509.KeyUsageDigitalSignature, ""},
		{"accepts RSA 2048 for signing and key encipherment", rsa2048.Public(), x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ""},
		{"rejects P-224", p224.Public(), 0, "csr key uses curve P-224"},
		{"rejects RSA 1024", rsa1024.Public(), 0, "csr rsa key has 1024 bits; at least 2048 are required"},
		{"rejects an unknown key type", struct{}{}, 0, "csr key type struct {} is not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := &x509Issuance{csr: &x509.CertificateRequest{PublicKey: tt.pub}}
			wantStepErr(t, leafKeyPolicy{}.x509(is), tt.want, true)
			if is.leaf.keyUsage != tt.wantUsage {
				t.Errorf("key usage %v, want %v", is.leaf.keyUsage, tt.wantUsage)
			}
			if tt.want == "" && is.leaf.publicKey == nil {
				t.Error("the leaf got no public key")
			}
		})
	}
}

func TestCSRURISAN(t *testing.T) {
	uri := func(s string) *url.URL { u, _ := url.Parse(s); return u }
	tests := []struct {
		name string
		uris []*url.URL
		want string
	}{
		{"accepts no uri san", nil, ""},
		{"accepts the requested id", []*url.URL{uri(stepID.String())}, ""},
		{"rejects another id", []*url.URL{uri("spiffe://example.org/db")}, `csr uri san "spiffe://example.org/db" is not the requested spiffe id "spiffe://example.org/web"`},
		{"rejects two uri sans", []*url.URL{uri(stepID.String()), uri(stepID.String())}, "csr has 2 uri sans; at most one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := &x509Issuance{req: X509SVIDRequest{ID: stepID}, csr: &x509.CertificateRequest{URIs: tt.uris}}
			wantStepErr(t, csrURISAN{}.x509(is), tt.want, true)
		})
	}
}

func TestCapAtSigningCA(t *testing.T) {
	tests := []struct {
		name         string
		caNotAfter   time.Time
		wantNotAfter time.Time
		want         string
	}{
		{"keeps the ttl when the intermediate outlives it", stepTime.Add(48 * time.Hour), stepTime.Add(time.Hour), ""},
		{"caps at the intermediate's NotAfter", stepTime.Add(10 * time.Minute), stepTime.Add(10 * time.Minute), ""},
		{"refuses when the intermediate has expired", stepTime, time.Time{}, "signing intermediate 0102 expired at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := &x509Issuance{now: stepTime, ttl: time.Hour, signer: &x509.Certificate{NotAfter: tt.caNotAfter, SubjectKeyId: []byte{1, 2}}}
			wantStepErr(t, capAtSigningCA{}.x509(is), tt.want, false)
			if !is.leaf.notAfter.Equal(tt.wantNotAfter) {
				t.Errorf("notAfter %s, want %s", is.leaf.notAfter, tt.wantNotAfter)
			}
		})
	}
}

func TestSubjectFromDNSName(t *testing.T) {
	base := pkix.Name{Organization: []string{"Kith"}}
	preset := []byte{0x30, 0}
	withCN := base
	withCN.CommonName = "web.example.org"
	wantCN, err := asn1.Marshal(withCN.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		names []string
		want  []byte
	}{
		{"keeps the preset subject without dns names", nil, preset},
		{"makes the first dns name the common name", []string{"web.example.org", "web2.example.org"}, wantCN},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := &x509Issuance{req: X509SVIDRequest{DNSNames: tt.names}}
			is.leaf.subject = preset
			if err := (subjectFromDNSName{base}).x509(is); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, is.leaf.subject); diff != "" {
				t.Errorf("subject DER (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAudiencePolicy(t *testing.T) {
	tests := []struct {
		name string
		aud  []string
		want string
	}{
		{"accepts one audience", []string{"db"}, ""},
		{"rejects no audience", nil, "audience is required"},
		{"rejects a control character", []string{"a\nb"}, "audience value 0 has the control character U+000A at byte 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantStepErr(t, audiencePolicy{}.jwt(&jwtIssuance{audience: tt.aud}), tt.want, true)
		})
	}
}

func TestCapAtJWTKey(t *testing.T) {
	tests := []struct {
		name        string
		keyNotAfter time.Time
		wantExp     time.Time
		want        string
	}{
		{"keeps the ttl when the key outlives it", stepTime.Add(time.Hour), stepTime.Add(5 * time.Minute), ""},
		{"caps at the key's NotAfter", stepTime.Add(time.Minute), stepTime.Add(time.Minute), ""},
		{"refuses when less than a second is left", stepTime.Add(time.Millisecond), time.Time{}, "jwt key k1 expired at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := &jwtIssuance{now: stepTime, ttl: 5 * time.Minute, kid: "k1", keyNotAfter: tt.keyNotAfter}
			wantStepErr(t, capAtJWTKey{}.jwt(is), tt.want, false)
			if !is.exp.Equal(tt.wantExp) {
				t.Errorf("exp %s, want %s", is.exp, tt.wantExp)
			}
		})
	}
}

func TestStepOrder(t *testing.T) {
	name := func(v any) string { return strings.TrimPrefix(fmt.Sprintf("%T", v), "ca.") }
	var gotX509, gotJWT []string
	for _, s := range x509Steps(Config{}) {
		gotX509 = append(gotX509, name(s))
	}
	for _, s := range jwtSteps(Config{}) {
		gotJWT = append(gotJWT, name(s))
	}
	wantX509 := []string{"idInTrustDomain", "svidTTL", "dnsNameSyntax", "csrDER", "csrSignature", "leafKeyPolicy", "csrURISAN", "capAtSigningCA", "subjectFromDNSName"}
	wantJWT := []string{"idInTrustDomain", "audiencePolicy", "svidTTL", "capAtJWTKey"}
	if diff := cmp.Diff(wantX509, gotX509); diff != "" {
		t.Errorf("x509 steps (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantJWT, gotJWT); diff != "" {
		t.Errorf("jwt steps (-want +got):\n%s", diff)
	}
}
