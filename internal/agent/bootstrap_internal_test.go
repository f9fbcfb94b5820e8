package agent

import (
	"crypto/x509"
	"net/url"
	"testing"
)

func TestRootsTrustDomain(t *testing.T) {
	root := func(uris ...string) *x509.Certificate {
		c := &x509.Certificate{}
		for _, s := range uris {
			u, err := url.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			c.URIs = append(c.URIs, u)
		}
		return c
	}
	tests := []struct {
		name    string
		roots   []*x509.Certificate
		want    string // "" for none
		wantErr bool
	}{
		{name: "kith roots", roots: []*x509.Certificate{root("spiffe://acme.test"), root("spiffe://acme.test")}, want: "acme.test"},
		{name: "an upstream root names none", roots: []*x509.Certificate{root(), root("https://ca.example.com")}},
		{name: "one of two names it", roots: []*x509.Certificate{root(), root("spiffe://acme.test")}, want: "acme.test"},
		{name: "not a SPIFFE ID", roots: []*x509.Certificate{root("spiffe://UPPER.test")}},
		{name: "two trust domains", roots: []*x509.Certificate{root("spiffe://acme.test"), root("spiffe://other.test")}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			td, err := rootsTrustDomain(tt.roots)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			got := ""
			if !td.IsZero() {
				got = td.Name()
			}
			if got != tt.want {
				t.Errorf("trust domain %q, want %q", got, tt.want)
			}
		})
	}
}
