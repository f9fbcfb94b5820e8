package cache_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/catest"
	"github.com/kithid/kith/svid/cache"
)

var (
	td  = spiffeid.RequireTrustDomainFromString("example.org")
	web = spiffeid.RequireFromPath(td, "/web")
)

type signer struct {
	t  *testing.T
	ca *ca.CA
}

func newSigner(t *testing.T) *signer { return &signer{t: t, ca: catest.NewCA(t, td)} }

// sign returns a new key and the DER chain the CA issues for it.
func (s *signer) sign(id spiffeid.ID) (*ecdsa.PrivateKey, [][]byte) {
	key, chain := catest.IssueSVID(s.t, s.ca, id, 0)
	ders := make([][]byte, len(chain))
	for i, c := range chain {
		ders[i] = c.Raw
	}
	return key, ders
}

func TestNewSVIDKeepsTheChainAndKeyAsDER(t *testing.T) {
	s := newSigner(t)
	key, chain := s.sign(web)
	svid, err := cache.NewSVID(web, chain, key)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(svid.Leaf, chain[0]) || !bytes.Equal(svid.Intermediates, bytes.Join(chain[1:], nil)) {
		t.Error("leaf or intermediates differ from the chain given")
	}
	if !bytes.Equal(svid.Chain(), bytes.Join(chain, nil)) {
		t.Error("Chain is not leaf + intermediates")
	}
	leaf, _ := x509.ParseCertificate(chain[0])
	if !svid.NotBefore.Equal(leaf.NotBefore) || !svid.NotAfter.Equal(leaf.NotAfter) {
		t.Errorf("validity %v – %v, want %v – %v", svid.NotBefore, svid.NotAfter, leaf.NotBefore, leaf.NotAfter)
	}

	// Every encoded form parses back to the same SVID with go-spiffe.
	parsed, err := svid.X509SVID()
	if err != nil {
		t.Fatal(err)
	}
	fromPEM, err := x509svid.Parse(svid.ChainPEM(), svid.KeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*x509svid.SVID{parsed, fromPEM} {
		if p.ID != web || len(p.Certificates) != len(chain) || !p.PrivateKey.Public().(*ecdsa.PublicKey).Equal(&key.PublicKey) {
			t.Errorf("parsed SVID %s with %d certificates does not match", p.ID, len(p.Certificates))
		}
		if _, _, err := x509svid.Verify(p.Certificates, s.ca.Bundle()); err != nil {
			t.Errorf("parsed SVID does not verify: %v", err)
		}
	}
	again, err := cache.ParseSVID(svid.Chain(), svid.Key)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Leaf, svid.Leaf) || !bytes.Equal(again.Key, svid.Key) || !bytes.Equal(again.Intermediates, svid.Intermediates) {
		t.Error("ParseSVID(Chain, Key) does not give the same SVID back")
	}

	// The chain is copied: the buffer it came in may be reused.
	chain[0][len(chain[0])-1] ^= 0xff
	if bytes.Equal(svid.Leaf, chain[0]) {
		t.Error("the SVID aliases the caller's buffer")
	}
}

func TestNewSVIDRefusesWhatTheAgentDidNotAskFor(t *testing.T) {
	s := newSigner(t)
	key, chain := s.sign(web)
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		id    spiffeid.ID
		chain [][]byte
		key   *ecdsa.PrivateKey
		want  string
	}{
		{"empty chain", web, nil, key, "empty certificate chain"},
		{"garbage", web, [][]byte{[]byte("not a certificate")}, key, "parse certificate"},
		{"another SPIFFE ID", spiffeid.RequireFromPath(td, "/db"), chain, key, "want spiffe://example.org/db"},
		{"another key", web, chain, otherKey, "public key"},
		{"bad intermediate", web, [][]byte{chain[0], []byte("junk")}, key, "parse intermediate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := cache.NewSVID(tt.id, tt.chain, tt.key)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewSVID error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestSVIDsShareTheirIntermediates(t *testing.T) {
	s := newSigner(t)
	c := cache.New()
	sel := attestation.Selector{Type: "unix", Key: "uid", Value: "1"}
	var entries []cache.Entry
	svids := map[string]*cache.SVID{}
	for _, name := range []string{"a", "b", "c"} {
		id := spiffeid.RequireFromPath(td, "/"+name)
		entries = append(entries, cache.Entry{ID: name, SPIFFEID: id, Selectors: []attestation.Selector{sel}, X509TTL: time.Hour})
		key, chain := s.sign(id)
		svid, err := cache.NewSVID(id, chain, key)
		if err != nil {
			t.Fatal(err)
		}
		svids[name] = svid
	}
	c.ReplaceEntries(entries, 1)
	c.SetSVIDs(svids)
	got := c.SVIDs()
	if len(got) != 3 {
		t.Fatalf("cache holds %d SVIDs, want 3", len(got))
	}
	if &got["a"].Intermediates[0] != &got["b"].Intermediates[0] || &got["b"].Intermediates[0] != &got["c"].Intermediates[0] {
		t.Error("SVIDs from one CA hold separate copies of its intermediate")
	}
}

func TestParseSVIDRefusesDamagedRecords(t *testing.T) {
	s := newSigner(t)
	key, chain := s.sign(web)
	svid, err := cache.NewSVID(web, chain, key)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherDER, _ := x509.MarshalPKCS8PrivateKey(other)
	tests := []struct {
		name       string
		chain, key []byte
		want       string
	}{
		{"empty chain", nil, svid.Key, "not DER"},
		{"truncated chain", svid.Chain()[:100], svid.Key, "not DER"},
		{"garbage key", svid.Chain(), []byte("junk"), "parse private key"},
		{"another key", svid.Chain(), otherDER, "public key"},
		{"damaged intermediate", append(bytes.Clone(svid.Leaf), 0x30, 0x03, 1, 2, 3), svid.Key, "intermediate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := cache.ParseSVID(tt.chain, tt.key); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseSVID error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}
