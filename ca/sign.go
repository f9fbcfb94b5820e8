package ca

import (
	"context"
	"crypto"
	"crypto/rand"
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
// active intermediate that signed it, then (with an upstream authority) the upstream's intermediates up to
// but excluding its root.
func (c *CA) SignX509SVID(ctx context.Context, req X509SVIDRequest) ([]*x509.Certificate, error) {
	chain, err := c.signX509SVID(req)
	if err != nil {
		return nil, fmt.Errorf("sign x509-svid for %s: %w", req.ID, err)
	}
	return chain, nil
}

func (c *CA) signX509SVID(req X509SVIDRequest) ([]*x509.Certificate, error) {
	st := c.state.Load()
	is := &x509Issuance{
		req:    req,
		now:    c.now(),
		signer: st.x509Cert,
		// The chain's NotAfter: an upstream intermediate may end before the CA's.
		chainNotAfter: st.x509NotAfter,
	}
	is.leaf.subject = c.leafSubject
	is.leaf.dnsNames = req.DNSNames
	for _, step := range c.x509Steps {
		if err := step.x509(is); err != nil {
			return nil, err
		}
	}
	is.leaf.serial = randomSerial()
	is.leaf.notBefore = is.now.Add(-backdate)
	is.leaf.uri = req.ID.URL()
	der, err := createLeaf(is.leaf, st.x509Cert, st.x509Signer)
	if err != nil {
		return nil, fmt.Errorf("create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	chain := make([]*x509.Certificate, 1, 1+len(st.x509Chain))
	chain[0] = leaf
	return append(chain, st.x509Chain...), nil
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
	st := c.state.Load()
	is := &jwtIssuance{id: id, audience: audience, ttl: ttl, now: c.now(), kid: st.jwtKID, keyNotAfter: st.jwtNotAfter}
	for _, step := range c.jwtSteps {
		if err := step.jwt(is); err != nil {
			return "", time.Time{}, err
		}
	}
	now, exp := is.now, is.exp
	payload, err := json.Marshal(jwtClaims{Issuer: c.JWTIssuer(), Subject: id.String(), Audience: audience, Expiry: exp.Unix(), IssuedAt: now.Unix()})
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
