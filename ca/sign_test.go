package ca_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/internal/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func TestSignX509SVIDIssuesVerifiableSVIDs(t *testing.T) {
	clk := testutil.NewClock(t0)
	f := newFixture(t, clk.Now)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)

	tests := []struct {
		name       string
		key        crypto.Signer
		uris       []string
		dnsNames   []string
		ttl        time.Duration
		wantTTL    time.Duration
		wantUsage  x509.KeyUsage
		wantCommon string
	}{
		{name: "a P-256 key with the default ttl", key: newKey(t), uris: []string{workload.String()}, wantTTL: time.Hour, wantUsage: x509.KeyUsageDigitalSignature},
		{name: "a P-384 key with a 24h ttl", key: p384, uris: []string{workload.String()}, ttl: 24 * time.Hour, wantTTL: 24 * time.Hour, wantUsage: x509.KeyUsageDigitalSignature},
		{name: "an Ed25519 key", key: edKey, uris: []string{workload.String()}, ttl: time.Minute, wantTTL: time.Minute, wantUsage: x509.KeyUsageDigitalSignature},
		{name: "an RSA key gets key encipherment too", key: rsaKey, wantTTL: time.Hour, wantUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment},
		{name: "a CSR without a URI SAN", key: newKey(t), wantTTL: time.Hour, wantUsage: x509.KeyUsageDigitalSignature},
		{name: "DNS names become SANs and the first the common name", key: newKey(t), dnsNames: []string{"payments.example.org", "*.payments.svc"}, wantTTL: time.Hour, wantUsage: x509.KeyUsageDigitalSignature, wantCommon: "payments.example.org"},
	}
	for _, tt := range tests {
		t.Run("signs "+tt.name, func(t *testing.T) {
			chain, err := f.ca.SignX509SVID(context.Background(), ca.X509SVIDRequest{
				ID: workload, CSR: makeCSR(t, tt.key, tt.uris...), DNSNames: tt.dnsNames, TTL: tt.ttl,
			})
			if err != nil {
				t.Fatalf("SignX509SVID: %v", err)
			}
			raw := [][]byte{chain[0].Raw, chain[1].Raw}
			id, _, err := x509svid.ParseAndVerify(raw, f.ca.Bundle(), x509svid.WithTime(clk.Now()))
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			leaf := chain[0]
			type profile struct {
				ID          string
				URIs        int
				DNSNames    []string
				CommonName  string
				NotBefore   time.Time
				NotAfter    time.Time
				KeyUsage    x509.KeyUsage
				ExtKeyUsage []x509.ExtKeyUsage
				IsCA        bool
				Issuer      string
			}
			got := profile{id.String(), len(leaf.URIs), leaf.DNSNames, leaf.Subject.CommonName, leaf.NotBefore, leaf.NotAfter,
				leaf.KeyUsage, leaf.ExtKeyUsage, leaf.IsCA, chain[1].Subject.CommonName}
			want := profile{workload.String(), 1, tt.dnsNames, tt.wantCommon, t0.Add(-time.Minute), t0.Add(tt.wantTTL),
				tt.wantUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, false,
				mustParse(t, active(t, f.ca, ca.KindX509Intermediate).CertDER).Subject.CommonName}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("leaf profile (-want +got):\n%s", diff)
			}
			if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() > 128 || leaf.SerialNumber.BitLen() < 64 {
				t.Errorf("serial %s is not a random positive 128-bit number", leaf.SerialNumber)
			}
		})
	}
}

func TestSignX509SVIDRejectsBadRequests(t *testing.T) {
	f := newFixture(t, testutil.NewClock(t0).Now)
	good := makeCSR(t, newKey(t), workload.String())
	badSig := append([]byte(nil), good...)
	badSig[len(badSig)-1] ^= 0xff
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	other := spiffeid.RequireFromString("spiffe://other.org/ns/prod/sa/payments")

	tests := []struct {
		name    string
		req     ca.X509SVIDRequest
		wantMsg string
	}{
		{"a CSR that is not DER", ca.X509SVIDRequest{ID: workload, CSR: []byte("not a csr")}, "csr is not a valid DER PKCS#10 request"},
		{"a CSR with a bad signature", ca.X509SVIDRequest{ID: workload, CSR: badSig}, "csr signature is invalid"},
		{"an RSA key under 2048 bits", ca.X509SVIDRequest{ID: workload, CSR: makeCSR(t, rsa1024)}, "csr rsa key has 1024 bits; at least 2048 are required"},
		{"an ECDSA P-521 key", ca.X509SVIDRequest{ID: workload, CSR: makeCSR(t, p521)}, "csr key uses curve P-521"},
		{"an ECDSA P-224 key", ca.X509SVIDRequest{ID: workload, CSR: makeCSR(t, p224)}, "csr key uses curve P-224"},
		{"a CSR URI SAN that is not the requested ID", ca.X509SVIDRequest{ID: workload, CSR: makeCSR(t, newKey(t), "spiffe://example.org/other")}, `csr uri san "spiffe://example.org/other" is not the requested spiffe id`},
		{"a CSR with two URI SANs", ca.X509SVIDRequest{ID: workload, CSR: makeCSR(t, newKey(t), workload.String(), "spiffe://example.org/other")}, "csr has 2 uri sans; at most one"},
		{"an ID in another trust domain", ca.X509SVIDRequest{ID: other, CSR: makeCSR(t, newKey(t), other.String())}, `is not in trust domain "example.org"`},
		{"the trust domain ID itself", ca.X509SVIDRequest{ID: td.ID(), CSR: good}, "is the trust domain itself"},
		{"a missing ID", ca.X509SVIDRequest{CSR: good}, "spiffe id is required"},
		{"a ttl below the minimum", ca.X509SVIDRequest{ID: workload, CSR: good, TTL: 30 * time.Second}, "ttl 30s is out of bounds: ask for 0 (default 1h0m0s) or between 1m0s and 24h0m0s"},
		{"a ttl above the maximum", ca.X509SVIDRequest{ID: workload, CSR: good, TTL: 25 * time.Hour}, "ttl 25h0m0s is out of bounds"},
		{"a negative ttl", ca.X509SVIDRequest{ID: workload, CSR: good, TTL: -time.Hour}, "ttl -1h0m0s is out of bounds"},
		{"a DNS name with an underscore", ca.X509SVIDRequest{ID: workload, CSR: good, DNSNames: []string{"bad_name.example.org"}}, `dns name "bad_name.example.org" is invalid`},
		{"a DNS name with an empty label", ca.X509SVIDRequest{ID: workload, CSR: good, DNSNames: []string{"a..example.org"}}, "each label must have 1 to 63 characters"},
		{"a DNS name starting with a hyphen", ca.X509SVIDRequest{ID: workload, CSR: good, DNSNames: []string{"-a.example.org"}}, "may not start or end with a hyphen"},
		{"an empty DNS name", ca.X509SVIDRequest{ID: workload, CSR: good, DNSNames: []string{""}}, `dns name "" is invalid: empty`},
	}
	for _, tt := range tests {
		t.Run("rejects "+tt.name, func(t *testing.T) {
			chain, err := f.ca.SignX509SVID(context.Background(), tt.req)
			if err == nil {
				t.Fatalf("SignX509SVID returned %d certificates, want an error", len(chain))
			}
			if !errors.Is(err, ca.ErrInvalidRequest) {
				t.Errorf("error %q does not wrap ErrInvalidRequest", err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not contain %q", err, tt.wantMsg)
			}
		})
	}
}

func TestSignX509SVIDCapsNotAfterAtTheIntermediate(t *testing.T) {
	clk := testutil.NewClock(t0)
	f := newFixture(t, clk.Now)
	inter := active(t, f.ca, ca.KindX509Intermediate)
	clk.Set(inter.NotAfter.Add(-2 * time.Hour)) // no Tick: the intermediate stays active
	chain := issue(t, f.ca, workload, 24*time.Hour)
	if diff := cmp.Diff(inter.NotAfter, chain[0].NotAfter); diff != "" {
		t.Errorf("leaf NotAfter (-want +got):\n%s", diff)
	}
	clk.Set(inter.NotAfter.Add(time.Second))
	_, err := f.ca.SignX509SVID(context.Background(), ca.X509SVIDRequest{ID: workload, CSR: makeCSR(t, newKey(t))})
	if err == nil || errors.Is(err, ca.ErrInvalidRequest) {
		t.Errorf("signing with an expired intermediate: got %v, want an error that is not ErrInvalidRequest", err)
	}
}

func TestSignJWTSVID(t *testing.T) {
	f := newFixture(t, nil)
	aud := []string{"spiffe://example.org/ns/prod/sa/ledger", "billing"}
	start := time.Now()
	token, exp, err := f.ca.SignJWTSVID(context.Background(), workload, aud, 0)
	if err != nil {
		t.Fatalf("SignJWTSVID: %v", err)
	}
	svid, err := jwtsvid.ParseAndValidate(token, f.ca.Bundle(), []string{"billing"})
	if err != nil {
		t.Fatalf("ParseAndValidate: %v", err)
	}
	if diff := cmp.Diff(workload, svid.ID, cmp.Comparer(func(a, b spiffeid.ID) bool { return a == b })); diff != "" {
		t.Errorf("subject (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(aud, svid.Audience); diff != "" {
		t.Errorf("audience (-want +got):\n%s", diff)
	}
	if !svid.Expiry.Equal(exp) {
		t.Errorf("expiry %s, returned %s", svid.Expiry, exp)
	}
	if d := exp.Sub(start); d < 5*time.Minute-2*time.Second || d > 5*time.Minute+time.Second {
		t.Errorf("expiry is %s after signing, want 5m", d)
	}
	headerJSON, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var header map[string]string
	if err := json.Unmarshal(headerJSON, &header); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"alg": "ES256", "kid": active(t, f.ca, ca.KindJWT).ID, "typ": "JWT"}
	if diff := cmp.Diff(want, header); diff != "" {
		t.Errorf("header (-want +got):\n%s", diff)
	}
	if _, err := jwtsvid.ParseAndValidate(token, f.ca.Bundle(), []string{"someone-else"}); err == nil {
		t.Error("token validated for an audience it was not issued to")
	}
}

func TestSignJWTSVIDRejectsBadRequests(t *testing.T) {
	f := newFixture(t, nil)
	other := spiffeid.RequireFromString("spiffe://other.org/x")
	tests := []struct {
		name    string
		id      spiffeid.ID
		aud     []string
		ttl     time.Duration
		wantMsg string
	}{
		{"a missing audience", workload, nil, 0, "audience is required"},
		{"an empty audience value", workload, []string{"a", ""}, 0, "audience value 1 is empty; each value must be 1 to 256 bytes"},
		{"more than 16 audience values", workload, strings.Split("a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q", ","), 0, "17 audience values; a jwt-svid may name at most 16"},
		{"an audience value over 256 bytes", workload, []string{"a", strings.Repeat("x", 257)}, 0, "audience value 1 is 257 bytes; each value must be 1 to 256 bytes"},
		{"an audience value of invalid UTF-8", workload, []string{"a\xffb"}, 0, "audience value 0 is not valid UTF-8"},
		{"an audience value with a NUL", workload, []string{"admin\x00billing"}, 0, "audience value 0 has the control character U+0000 at byte 5"},
		{"an audience value with a newline", workload, []string{"db\n"}, 0, "audience value 0 has the control character U+000A at byte 2"},
		{"an audience value with a C1 control", workload, []string{"db\u0085"}, 0, "audience value 0 has the control character U+0085 at byte 2"},
		{"a ttl above the maximum", workload, []string{"a"}, 2 * time.Hour, "ttl 2h0m0s is out of bounds"},
		{"a ttl below the minimum", workload, []string{"a"}, time.Second, "ttl 1s is out of bounds"},
		{"an ID in another trust domain", other, []string{"a"}, 0, "is not in trust domain"},
		{"the trust domain ID itself", td.ID(), []string{"a"}, 0, "is the trust domain itself"},
	}
	for _, tt := range tests {
		t.Run("rejects "+tt.name, func(t *testing.T) {
			_, _, err := f.ca.SignJWTSVID(context.Background(), tt.id, tt.aud, tt.ttl)
			if !errors.Is(err, ca.ErrInvalidRequest) || !strings.Contains(fmtErr(err), tt.wantMsg) {
				t.Errorf("got error %v, want ErrInvalidRequest containing %q", err, tt.wantMsg)
			}
		})
	}
}

func TestCheckAudienceAcceptsValuesAtTheLimits(t *testing.T) {
	sixteen := make([]string, ca.MaxAudiences)
	for i := range sixteen {
		sixteen[i] = strings.Repeat(string(rune('a'+i)), ca.MaxAudienceBytes)
	}
	tests := []struct {
		name string
		aud  []string
	}{
		{"one short value", []string{"x"}},
		{"a SPIFFE ID and a URL", []string{"spiffe://example.org/db", "https://api.example.org/v1?x=1"}},
		{"16 values of 256 bytes", sixteen},
		{"printable non-ASCII text", []string{"café 東京"}},
	}
	for _, tt := range tests {
		t.Run("accepts "+tt.name, func(t *testing.T) {
			if err := ca.CheckAudience(tt.aud); err != nil {
				t.Errorf("CheckAudience: %v", err)
			}
		})
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestSignJWTSVIDCapsExpiryAtTheKeyNotAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, nil)
		key := active(t, f.ca, ca.KindJWT)
		time.Sleep(time.Until(key.NotAfter.Add(-10 * time.Minute))) // no Tick: the key stays active
		token, exp, err := f.ca.SignJWTSVID(context.Background(), workload, []string{"a"}, time.Hour)
		if err != nil {
			t.Fatalf("SignJWTSVID: %v", err)
		}
		if !exp.Equal(key.NotAfter) {
			t.Errorf("expiry %s, want the key's NotAfter %s", exp, key.NotAfter)
		}
		if _, err := jwtsvid.ParseAndValidate(token, f.ca.Bundle(), []string{"a"}); err != nil {
			t.Errorf("ParseAndValidate: %v", err)
		}
	})
}

func TestJWTSVIDIssuer(t *testing.T) {
	for _, tt := range []struct {
		name, issuer string
	}{
		{"no issuer configured: no iss claim", ""},
		{"issuer configured: iss claim", "https://kith.example.org"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, nil, func(c *ca.Config) { c.JWTIssuer = tt.issuer })
			token, _, err := f.ca.SignJWTSVID(context.Background(), workload, []string{"billing"}, 0)
			if err != nil {
				t.Fatal(err)
			}
			svid, err := jwtsvid.ParseAndValidate(token, f.ca.Bundle(), []string{"billing"})
			if err != nil {
				t.Fatal(err)
			}
			iss, ok := svid.Claims["iss"]
			if tt.issuer == "" && ok {
				t.Errorf("iss = %v, want none", iss)
			}
			if tt.issuer != "" && iss != tt.issuer {
				t.Errorf("iss = %v, want %q", iss, tt.issuer)
			}
		})
	}
}
