package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// X509SVIDRequest asks for an X.509-SVID.
type X509SVIDRequest struct {
	ID       spiffeid.ID   // the SPIFFE ID; must be in the CA's trust domain
	CSR      []byte        // DER PKCS#10; its URI SAN, if any, must be ID
	DNSNames []string      // optional DNS SANs; the first is also the subject CommonName
	TTL      time.Duration // zero: Config.X509SVIDTTL
}

// requestError is a rejection of caller input: it wraps ErrInvalidRequest and its cause.
type requestError struct{ err error }

func (e *requestError) Error() string   { return e.err.Error() }
func (e *requestError) Unwrap() []error { return []error{ErrInvalidRequest, e.err} }

func invalidf(format string, args ...any) error {
	return &requestError{err: fmt.Errorf(format, args...)}
}

// SignX509SVID checks the request and its CSR and returns the new X.509-SVID chain: the leaf, then the
// active intermediate that signed it.
func (c *CA) SignX509SVID(ctx context.Context, req X509SVIDRequest) ([]*x509.Certificate, error) {
	chain, err := c.signX509SVID(req)
	if err != nil {
		return nil, fmt.Errorf("sign x509-svid for %s: %w", req.ID, err)
	}
	return chain, nil
}

func (c *CA) signX509SVID(req X509SVIDRequest) ([]*x509.Certificate, error) {
	if err := c.checkID(req.ID); err != nil {
		return nil, err
	}
	ttl, err := checkTTL(req.TTL, c.cfg.X509SVIDTTL, c.cfg.MinSVIDTTL, c.cfg.MaxX509SVIDTTL)
	if err != nil {
		return nil, err
	}
	for _, name := range req.DNSNames {
		if err := checkDNSName(name); err != nil {
			return nil, err
		}
	}
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		return nil, invalidf("csr is not a valid DER PKCS#10 request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, invalidf("csr signature is invalid: %w", err)
	}
	keyUsage, err := checkLeafKey(csr.PublicKey)
	if err != nil {
		return nil, err
	}
	switch {
	case len(csr.URIs) > 1:
		return nil, invalidf("csr has %d uri sans; at most one (the requested spiffe id) is allowed", len(csr.URIs))
	case len(csr.URIs) == 1 && csr.URIs[0].String() != req.ID.String():
		return nil, invalidf("csr uri san %q is not the requested spiffe id %q", csr.URIs[0].String(), req.ID.String())
	}

	st := c.state.Load()
	now := c.now()
	notAfter := now.Add(ttl)
	if ca := st.x509Cert.NotAfter; notAfter.After(ca) {
		notAfter = ca
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("signing intermediate %x expired at %s", st.x509Cert.SubjectKeyId, st.x509Cert.NotAfter)
	}
	l := leafFields{
		serial:    randomSerial(),
		notBefore: now.Add(-backdate),
		notAfter:  notAfter,
		subject:   c.leafSubject,
		publicKey: csr.PublicKey,
		keyUsage:  keyUsage,
		uri:       req.ID.URL(),
		dnsNames:  req.DNSNames,
	}
	if len(req.DNSNames) > 0 {
		subject := c.cfg.Subject
		subject.CommonName = req.DNSNames[0]
		if l.subject, err = asn1.Marshal(subject.ToRDNSequence()); err != nil {
			return nil, fmt.Errorf("marshal subject: %w", err)
		}
	}
	der, err := createLeaf(l, st.x509Cert, st.x509Signer)
	if err != nil {
		return nil, fmt.Errorf("create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return []*x509.Certificate{leaf, st.x509Cert}, nil
}

// checkID accepts workload IDs in the CA's trust domain.
func (c *CA) checkID(id spiffeid.ID) error {
	switch {
	case id.IsZero():
		return invalidf("spiffe id is required")
	case id.TrustDomain() != c.td:
		return invalidf("spiffe id %q is not in trust domain %q", id.String(), c.td.Name())
	case id.Path() == "":
		return invalidf("spiffe id %q is the trust domain itself; a workload id needs a path", id.String())
	}
	return nil
}

// checkTTL returns the TTL to use: def for 0, ttl if within [minTTL, maxTTL].
func checkTTL(ttl, def, minTTL, maxTTL time.Duration) (time.Duration, error) {
	switch {
	case ttl == 0:
		return def, nil
	case ttl < minTTL || ttl > maxTTL:
		return 0, invalidf("ttl %s is out of bounds: ask for 0 (default %s) or between %s and %s", ttl, def, minTTL, maxTTL)
	}
	return ttl, nil
}

// checkLeafKey accepts ECDSA P-256/P-384, Ed25519 and RSA of at least 2048 bits, and returns the key usage
// for a leaf with that key.
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

// checkDNSName accepts a DNS name of letters, digits and hyphens, optionally starting with a "*." wildcard.
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

type jwtClaims struct {
	Issuer   string   `json:"iss,omitempty"`
	Subject  string   `json:"sub"`
	Audience []string `json:"aud"`
	Expiry   int64    `json:"exp"`
	IssuedAt int64    `json:"iat"`
}

// Limits on the audience of a JWT-SVID, enforced by CheckAudience.
const (
	MaxAudiences     = 16  // values in one audience
	MaxAudienceBytes = 256 // bytes in one audience value
)

// CheckAudience reports whether audience may be put in a JWT-SVID: 1 to MaxAudiences values, each 1 to
// MaxAudienceBytes bytes of valid UTF-8 without control characters. The error wraps ErrInvalidRequest and
// names the bad value by its index, never quoting it.
func CheckAudience(audience []string) error {
	if len(audience) == 0 {
		return invalidf("audience is required: name the service that will receive the token")
	}
	if len(audience) > MaxAudiences {
		return invalidf("%d audience values; a jwt-svid may name at most %d", len(audience), MaxAudiences)
	}
	for i, aud := range audience {
		switch {
		case aud == "":
			return invalidf("audience value %d is empty; each value must be 1 to %d bytes", i, MaxAudienceBytes)
		case len(aud) > MaxAudienceBytes:
			return invalidf("audience value %d is %d bytes; each value must be 1 to %d bytes", i, len(aud), MaxAudienceBytes)
		case !utf8.ValidString(aud):
			return invalidf("audience value %d is not valid UTF-8", i)
		}
		if j := strings.IndexFunc(aud, unicode.IsControl); j >= 0 {
			r, _ := utf8.DecodeRuneInString(aud[j:])
			return invalidf("audience value %d has the control character %U at byte %d; use printable characters only", i, r, j)
		}
	}
	return nil
}

// SignJWTSVID returns a JWT-SVID for id: a compact JWS signed ES256 by the active JWT key (header kid =
// the key's authority ID, typ JWT) with claims sub, aud, exp and iat. audience is required; ttl zero means
// Config.JWTSVIDTTL. The expiry is capped at the JWT key's NotAfter.
func (c *CA) SignJWTSVID(ctx context.Context, id spiffeid.ID, audience []string, ttl time.Duration) (string, time.Time, error) {
	token, exp, err := c.signJWTSVID(id, audience, ttl)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign jwt-svid for %s: %w", id, err)
	}
	return token, exp, nil
}

func (c *CA) signJWTSVID(id spiffeid.ID, audience []string, ttl time.Duration) (string, time.Time, error) {
	if err := c.checkID(id); err != nil {
		return "", time.Time{}, err
	}
	if err := CheckAudience(audience); err != nil {
		return "", time.Time{}, err
	}
	ttl, err := checkTTL(ttl, c.cfg.JWTSVIDTTL, c.cfg.MinSVIDTTL, c.cfg.MaxJWTSVIDTTL)
	if err != nil {
		return "", time.Time{}, err
	}
	st := c.state.Load()
	now := c.now()
	exp := now.Add(ttl)
	if exp.After(st.jwtNotAfter) {
		exp = st.jwtNotAfter
	}
	if exp.Unix() <= now.Unix() {
		return "", time.Time{}, fmt.Errorf("jwt key %s expired at %s", st.jwtKID, st.jwtNotAfter)
	}
	payload, err := json.Marshal(jwtClaims{Issuer: c.cfg.JWTIssuer, Subject: id.String(), Audience: audience, Expiry: exp.Unix(), IssuedAt: now.Unix()})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("marshal claims: %w", err)
	}
	enc := base64.RawURLEncoding
	buf := make([]byte, 0, len(st.jwtHeader)+1+enc.EncodedLen(len(payload))+1+enc.EncodedLen(64))
	buf = append(buf, st.jwtHeader...)
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, payload)
	digest := sha256.Sum256(buf)
	sigDER, err := st.jwtSigner.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign with jwt key %s: %w", st.jwtKID, err)
	}
	sig, err := es256Signature(sigDER)
	if err != nil {
		return "", time.Time{}, err
	}
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, sig)
	return string(buf), time.Unix(exp.Unix(), 0).UTC(), nil
}

// es256Signature converts an ASN.1 ECDSA P-256 signature to the JWS form: r and s, 32 bytes each.
func es256Signature(der []byte) ([]byte, error) {
	var sig struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &sig)
	switch {
	case err != nil:
		return nil, fmt.Errorf("parse ecdsa signature: %w", err)
	case len(rest) > 0:
		return nil, errors.New("parse ecdsa signature: trailing data")
	case sig.R.Sign() <= 0 || sig.S.Sign() <= 0 || sig.R.BitLen() > 256 || sig.S.BitLen() > 256:
		return nil, errors.New("ecdsa signature is not a P-256 signature")
	}
	out := make([]byte, 64)
	sig.R.FillBytes(out[:32])
	sig.S.FillBytes(out[32:])
	return out, nil
}
