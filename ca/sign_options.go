package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Issuance is an ordered list of small steps applied to one request, as smallstep's sign options are:
// each step either checks the request (a validator: it returns an error wrapping ErrInvalidRequest) or
// fills part of what will be signed (a modifier). The CA builds its lists once, in New, from its Config
// (x509Steps, jwtSteps); the first step that fails stops the issuance, so the order of the list is the
// order in which problems are reported.

// x509Issuance is one X.509-SVID issuance on its way through the steps: the request, what the steps
// learned from it, and the leaf they shape.
type x509Issuance struct {
	req    X509SVIDRequest
	now    time.Time
	signer *x509.Certificate // the signing intermediate
	// chainNotAfter is the earliest NotAfter of the signing intermediate and the upstream intermediates
	// above it; zero: signer.NotAfter.
	chainNotAfter time.Time
	ttl           time.Duration            // set by svidTTL
	csr           *x509.CertificateRequest // set by csrDER
	leaf          leafFields               // subject and dnsNames preset; the steps fill publicKey, keyUsage, notAfter, subject
}

// jwtIssuance is one JWT-SVID issuance on its way through the steps.
type jwtIssuance struct {
	id          spiffeid.ID
	audience    []string
	now         time.Time
	kid         string    // the signing key's ID
	keyNotAfter time.Time // the signing key's NotAfter
	ttl         time.Duration
	exp         time.Time // set by capAtJWTKey
}

// x509Step checks or shapes one X.509-SVID issuance.
type x509Step interface {
	x509(is *x509Issuance) error
}

// jwtStep checks or shapes one JWT-SVID issuance.
type jwtStep interface {
	jwt(is *jwtIssuance) error
}

// x509Steps is the X.509-SVID issuance pipeline for cfg.
func x509Steps(cfg Config) []x509Step {
	return []x509Step{
		idInTrustDomain{cfg.TrustDomain},
		svidTTL{def: cfg.X509SVIDTTL, min: cfg.MinSVIDTTL, max: cfg.MaxX509SVIDTTL},
		dnsNameSyntax{},
		csrDER{},
		csrSignature{},
		leafKeyPolicy{},
		csrURISAN{},
		capAtSigningCA{},
		subjectFromDNSName{cfg.Subject},
	}
}

// jwtSteps is the JWT-SVID issuance pipeline for cfg.
func jwtSteps(cfg Config) []jwtStep {
	return []jwtStep{
		idInTrustDomain{cfg.TrustDomain},
		audiencePolicy{},
		svidTTL{def: cfg.JWTSVIDTTL, min: cfg.MinSVIDTTL, max: cfg.MaxJWTSVIDTTL},
		capAtJWTKey{},
	}
}

var (
	_ x509Step = idInTrustDomain{}
	_ jwtStep  = idInTrustDomain{}
	_ x509Step = svidTTL{}
	_ jwtStep  = svidTTL{}
	_ x509Step = dnsNameSyntax{}
	_ x509Step = csrDER{}
	_ x509Step = csrSignature{}
	_ x509Step = leafKeyPolicy{}
	_ x509Step = csrURISAN{}
	_ x509Step = capAtSigningCA{}
	_ x509Step = subjectFromDNSName{}
	_ jwtStep  = audiencePolicy{}
	_ jwtStep  = capAtJWTKey{}
)

// idInTrustDomain accepts workload IDs in the trust domain: not zero, not the trust domain's own ID.
type idInTrustDomain struct{ td spiffeid.TrustDomain }

func (v idInTrustDomain) x509(is *x509Issuance) error { return v.check(is.req.ID) }
func (v idInTrustDomain) jwt(is *jwtIssuance) error   { return v.check(is.id) }

func (v idInTrustDomain) check(id spiffeid.ID) error {
	switch {
	case id.IsZero():
		return invalidf("spiffe id is required")
	case id.TrustDomain() != v.td:
		return invalidf("spiffe id %q is not in trust domain %q", id.String(), v.td.Name())
	case id.Path() == "":
		return invalidf("spiffe id %q is the trust domain itself; a workload id needs a path", id.String())
	}
	return nil
}

// svidTTL sets the TTL to use: def when the request asks for 0, the request's own if within [min, max].
type svidTTL struct{ def, min, max time.Duration }

func (v svidTTL) x509(is *x509Issuance) (err error) {
	is.ttl, err = v.check(is.req.TTL)
	return err
}

func (v svidTTL) jwt(is *jwtIssuance) (err error) {
	is.ttl, err = v.check(is.ttl)
	return err
}

func (v svidTTL) check(ttl time.Duration) (time.Duration, error) {
	switch {
	case ttl == 0:
		return v.def, nil
	case ttl < v.min || ttl > v.max:
		return 0, invalidf("ttl %s is out of bounds: ask for 0 (default %s) or between %s and %s", ttl, v.def, v.min, v.max)
	}
	return ttl, nil
}

// dnsNameSyntax accepts DNS names of letters, digits and hyphens, each optionally starting with a "*."
// wildcard.
type dnsNameSyntax struct{}

func (dnsNameSyntax) x509(is *x509Issuance) error {
	for _, name := range is.req.DNSNames {
		if err := checkDNSName(name); err != nil {
			return err
		}
	}
	return nil
}

func checkDNSName(name string) error {
	bad := func(why string) error { return invalidf("dns name %q is invalid: %s", name, why) }
	if name == "" {
		return bad("empty")
	}
	if len(name) > 253 {
		return bad("longer than 253 characters")
	}
	labels := strings.Split(name, ".")
	for i, l := range labels {
		if i == 0 && l == "*" && len(labels) > 1 {
			continue
		}
		if l == "" || len(l) > 63 {
			return bad("each label must have 1 to 63 characters")
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return bad("a label may not start or end with a hyphen")
		}
		for j := 0; j < len(l); j++ {
			ch := l[j]
			if !('a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || ch == '-') {
				return bad("only letters, digits, hyphens and a leading \"*.\" are allowed")
			}
		}
	}
	return nil
}

// csrDER parses the request's CSR, a DER PKCS#10 request.
type csrDER struct{}

func (csrDER) x509(is *x509Issuance) error {
	csr, err := x509.ParseCertificateRequest(is.req.CSR)
	if err != nil {
		return invalidf("csr is not a valid DER PKCS#10 request: %w", err)
	}
	is.csr = csr
	return nil
}

// csrSignature accepts a CSR signed by the key it names: the caller holds that key.
type csrSignature struct{}

func (csrSignature) x509(is *x509Issuance) error {
	if err := is.csr.CheckSignature(); err != nil {
		return invalidf("csr signature is invalid: %w", err)
	}
	return nil
}

// leafKeyPolicy accepts ECDSA P-256/P-384, Ed25519 and RSA keys of at least 2048 bits, and sets the leaf's
// public key and the key usage that goes with its type.
type leafKeyPolicy struct{}

func (leafKeyPolicy) x509(is *x509Issuance) error {
	ku, err := checkLeafKey(is.csr.PublicKey)
	if err != nil {
		return err
	}
	is.leaf.publicKey, is.leaf.keyUsage = is.csr.PublicKey, ku
	return nil
}

func checkLeafKey(pub crypto.PublicKey) (x509.KeyUsage, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return 0, invalidf("csr key uses curve %s; use ECDSA P-256 or P-384, Ed25519 or RSA of 2048 bits or more", k.Curve.Params().Name)
		}
		return x509.KeyUsageDigitalSignature, nil
	case ed25519.PublicKey:
		return x509.KeyUsageDigitalSignature, nil
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 {
			return 0, invalidf("csr rsa key has %d bits; at least 2048 are required", n)
		}
		return x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, nil
	}
	return 0, invalidf("csr key type %T is not supported; use ECDSA P-256 or P-384, Ed25519 or RSA of 2048 bits or more", pub)
}

// csrURISAN accepts a CSR with no URI SAN or with exactly the requested SPIFFE ID.
type csrURISAN struct{}

func (csrURISAN) x509(is *x509Issuance) error {
	uris := is.csr.URIs
	switch {
	case len(uris) > 1:
		return invalidf("csr has %d uri sans; at most one (the requested spiffe id) is allowed", len(uris))
	case len(uris) == 1 && uris[0].String() != is.req.ID.String():
		return invalidf("csr uri san %q is not the requested spiffe id %q", uris[0].String(), is.req.ID.String())
	}
	return nil
}

// capAtSigningCA sets the leaf's NotAfter to now plus the TTL, capped at the signing intermediate's
// NotAfter and at that of every upstream intermediate above it; an expired chain signs nothing.
type capAtSigningCA struct{}

func (capAtSigningCA) x509(is *x509Issuance) error {
	notAfter := is.now.Add(is.ttl)
	ca := is.signer.NotAfter
	if !is.chainNotAfter.IsZero() && is.chainNotAfter.Before(ca) {
		ca = is.chainNotAfter
	}
	if notAfter.After(ca) {
		notAfter = ca
	}
	if !notAfter.After(is.now) {
		return fmt.Errorf("signing intermediate %x expired at %s", is.signer.SubjectKeyId, ca)
	}
	is.leaf.notAfter = notAfter
	return nil
}

// subjectFromDNSName makes the first DNS name, if any, the CommonName of the leaf's subject (subject
// otherwise).
type subjectFromDNSName struct{ subject pkix.Name }

func (m subjectFromDNSName) x509(is *x509Issuance) error {
	if len(is.req.DNSNames) == 0 {
		return nil
	}
	subject := m.subject
	subject.CommonName = is.req.DNSNames[0]
	der, err := asn1.Marshal(subject.ToRDNSequence())
	if err != nil {
		return fmt.Errorf("marshal subject: %w", err)
	}
	is.leaf.subject = der
	return nil
}

// audiencePolicy accepts what CheckAudience accepts.
type audiencePolicy struct{}

func (audiencePolicy) jwt(is *jwtIssuance) error { return CheckAudience(is.audience) }

// capAtJWTKey sets the expiry to now plus the TTL, capped at the signing key's NotAfter; a key that has
// expired (to the second, as JWTs count) signs nothing.
type capAtJWTKey struct{}

func (capAtJWTKey) jwt(is *jwtIssuance) error {
	exp := is.now.Add(is.ttl)
	if exp.After(is.keyNotAfter) {
		exp = is.keyNotAfter
	}
	if exp.Unix() <= is.now.Unix() {
		return fmt.Errorf("jwt key %s expired at %s", is.kid, is.keyNotAfter)
	}
	is.exp = exp
	return nil
}
