// Package stepca is an upstream authority that is a step-ca (smallstep): it signs the Kith CA's
// intermediate CSRs through step-ca's sign API (POST /1.0/sign) with a one-time token from a JWK
// provisioner (its name and the password that decrypts its key, which step-ca serves encrypted, or its
// private key in a file) or an X5C provisioner (a certificate chain and key step-ca trusts), and reads the
// roots to publish from /roots.
//
// It speaks step-ca's HTTP API itself, the three calls smallstep's ca.Client makes for this (GET
// /provisioners, POST /1.0/sign, GET /roots), with tokens built as its ca.Provisioner builds them, rather
// than importing github.com/smallstep/certificates/ca: v0.30.2, the latest, needs go.step.sm/crypto
// v0.77 and go-jose v4.1.3, and does not compile against the go.step.sm/crypto v0.92 and go-jose v4.1.9
// the rest of Kith (go-spiffe, OPA, gRPC) requires; downgrading those would take go-spiffe back to v2.6
// and OPA to v1.14.
//
// step-ca signs a CA certificate only with a provisioner template that makes one: basicConstraints
// isCA true and maxPathLen 0, keyUsage certSign and crlSign, the CSR's subject (.Insecure.CR.Subject) and
// URI SANs; and its claims.maxTLSCertDuration must allow ca.intermediate_ttl (docs/ca.md).
package stepca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"go.step.sm/crypto/jose"
	"go.step.sm/crypto/pemutil"
	"go.step.sm/crypto/randutil"

	"github.com/kithid/kith/ca"
)

// Config configures a step-ca upstream.
type Config struct {
	URL string // required: step-ca's address, e.g. https://ca.example.org:9000
	// RootFile is step-ca's root certificate (PEM), which the connection trusts. Either it or Fingerprint
	// is required.
	RootFile string
	// Fingerprint is the SHA-256 of step-ca's root in hex (`step certificate fingerprint root_ca.crt`): the
	// root is fetched from step-ca and checked against it, as `step ca bootstrap` does.
	Fingerprint string
	Provisioner string // required: the provisioner's name
	// PasswordFile, for a JWK provisioner: the password that decrypts its key (the key is fetched from
	// step-ca unless KeyFile is set; then it decrypts KeyFile).
	PasswordFile string
	// KeyFile, for a JWK provisioner: its private JWK (JSON; encrypted with PasswordFile's password if that
	// is set). Mode 0600 or stricter.
	KeyFile string
	// X5CCertFile and X5CKeyFile, for an X5C provisioner: a certificate chain (PEM, leaf first) that chains
	// to one of the provisioner's roots, and the leaf's key (mode 0600 or stricter).
	X5CCertFile, X5CKeyFile string
	Timeout                 time.Duration // of each call; zero: 30 s
	Logger                  *slog.Logger  // zero: discard
}

// Upstream is a step-ca upstream authority.
type Upstream struct {
	cfg    Config
	base   *url.URL
	client *http.Client
	fp     string // root fingerprint, in the tokens' sha claim
	log    *slog.Logger

	mu  sync.Mutex
	jwk *jose.JSONWebKey // JWK provisioners: loaded on first use
}

var _ ca.UpstreamAuthority = (*Upstream)(nil)

// New checks cfg and makes the client; it calls step-ca only when Fingerprint is set (to fetch the root
// once and check it).
func New(ctx context.Context, cfg Config) (*Upstream, error) {
	base, err := url.Parse(strings.TrimSuffix(cfg.URL, "/"))
	switch {
	case err != nil || base.Scheme != "https" || base.Host == "":
		return nil, fmt.Errorf("step upstream: url %q is not an https URL (e.g. https://ca.example.org:9000)", cfg.URL)
	case cfg.RootFile == "" && cfg.Fingerprint == "":
		return nil, errors.New("step upstream: root_file or fingerprint is required to trust step-ca's TLS certificate")
	case cfg.Provisioner == "":
		return nil, errors.New("step upstream: provisioner (its name) is required")
	case (cfg.X5CCertFile != "") != (cfg.X5CKeyFile != ""):
		return nil, errors.New("step upstream: x5c_cert_file and x5c_key_file go together")
	case cfg.X5CCertFile == "" && cfg.PasswordFile == "" && cfg.KeyFile == "":
		return nil, errors.New("step upstream: give password_file or key_file (JWK provisioner), or x5c_cert_file and x5c_key_file (X5C)")
	case cfg.X5CCertFile != "" && (cfg.PasswordFile != "" || cfg.KeyFile != ""):
		return nil, errors.New("step upstream: x5c_* and password_file/key_file are for different provisioner types: give one")
	}
	for _, f := range []string{cfg.KeyFile, cfg.X5CKeyFile, cfg.PasswordFile} {
		if f == "" {
			continue
		}
		if err := checkPrivate(f); err != nil {
			return nil, err
		}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	u := &Upstream{cfg: cfg, base: base, log: cfg.Logger}
	var root *x509.Certificate
	if cfg.RootFile != "" {
		if root, err = pemutil.ReadCertificate(cfg.RootFile); err != nil {
			return nil, fmt.Errorf("step upstream: root_file: %w", err)
		}
		if cfg.Fingerprint != "" && !strings.EqualFold(fingerprint(root), cfg.Fingerprint) {
			return nil, fmt.Errorf("step upstream: root_file %s has fingerprint %s, not the configured %s", cfg.RootFile, fingerprint(root), cfg.Fingerprint)
		}
	} else if root, err = u.bootstrap(ctx, cfg.Fingerprint); err != nil {
		return nil, err
	}
	u.fp = fingerprint(root)
	pool := x509.NewCertPool()
	pool.AddCert(root)
	u.client = &http.Client{Timeout: cfg.Timeout, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, Proxy: http.ProxyFromEnvironment,
	}}
	return u, nil
}

// bootstrap fetches step-ca's root by its fingerprint (GET /root/<sha256>, over TLS not yet trusted) and
// checks it, as `step ca bootstrap` does.
func (u *Upstream) bootstrap(ctx context.Context, fp string) (*x509.Certificate, error) {
	insecure := &http.Client{Timeout: u.cfg.Timeout, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the root is checked against the fingerprint below
	}}
	var resp struct {
		RootPEM string `json:"ca"`
	}
	if err := u.do(ctx, insecure, http.MethodGet, "/root/"+strings.ToLower(fp), nil, &resp); err != nil {
		return nil, fmt.Errorf("step upstream: fetch the root by its fingerprint: %w", err)
	}
	root, err := parseCert(resp.RootPEM)
	if err != nil {
		return nil, fmt.Errorf("step upstream: root from %s: %w", u.cfg.URL, err)
	}
	if !strings.EqualFold(fingerprint(root), fp) {
		return nil, fmt.Errorf("step upstream: %s served a root with fingerprint %s, not %s", u.cfg.URL, fingerprint(root), fp)
	}
	return root, nil
}

func checkPrivate(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("step upstream: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("step upstream: %s has mode %04o: make it readable by its owner only (chmod 600 %s)", path, fi.Mode().Perm(), path)
	}
	return nil
}

func password(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("step upstream: password file: %w", err)
	}
	return bytes.TrimRight(b, "\r\n"), nil
}

// stepError is step-ca's error body.
type stepError struct {
	Status  int    `json:"status"`
	Message string `json:"message"`
}

// do sends a JSON request (body nil: none) to path and decodes the JSON response into out.
func (u *Upstream) do(ctx context.Context, client *http.Client, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.base.String()+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("User-Agent", "kith")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var se stepError
		if json.Unmarshal(data, &se) == nil && se.Message != "" {
			return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, se.Message)
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return nil
}

// claims are a step-ca one-time token's claims (smallstep's token.Claims).
type claims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"`
	Audience  string   `json:"aud"`
	Expiry    int64    `json:"exp"`
	NotBefore int64    `json:"nbf"`
	IssuedAt  int64    `json:"iat"`
	ID        string   `json:"jti"`
	SHA       string   `json:"sha"`
	SANs      []string `json:"sans"`
}

// token returns a one-time token for a CSR with common name subject and the given SANs.
func (u *Upstream) token(ctx context.Context, subject string, sans []string) (string, error) {
	jti, err := randutil.Hex(64)
	if err != nil {
		return "", err
	}
	now := time.Now()
	aud := u.base.String() + "/1.0/sign"
	if u.cfg.X5CCertFile != "" {
		// step-ca finds a provisioner other than JWK by the audience's fragment: its type and name.
		aud += "#x5c/" + u.cfg.Provisioner
	}
	c := claims{
		Issuer: u.cfg.Provisioner, Subject: subject, Audience: aud,
		IssuedAt: now.Unix(), NotBefore: now.Unix(), Expiry: now.Add(5 * time.Minute).Unix(),
		ID: jti, SHA: u.fp, SANs: sans,
	}
	opts := new(jose.SignerOptions).WithType("JWT")
	var sk jose.SigningKey
	if u.cfg.X5CCertFile != "" {
		pk, err := pemutil.Read(u.cfg.X5CKeyFile)
		if err != nil {
			return "", fmt.Errorf("step upstream: x5c_key_file: %w", err)
		}
		signer, ok := pk.(crypto.Signer)
		if !ok {
			return "", fmt.Errorf("step upstream: x5c_key_file %s holds no private key", u.cfg.X5CKeyFile)
		}
		certs, err := pemutil.ReadCertificateBundle(u.cfg.X5CCertFile)
		if err != nil {
			return "", fmt.Errorf("step upstream: x5c_cert_file: %w", err)
		}
		var x5c []string
		for _, c := range certs {
			x5c = append(x5c, base64.StdEncoding.EncodeToString(c.Raw))
		}
		opts.WithHeader("x5c", x5c)
		sk = jose.SigningKey{Key: signer}
	} else {
		jwk, err := u.provisionerKey(ctx)
		if err != nil {
			return "", err
		}
		opts.WithHeader("kid", jwk.KeyID)
		sk = jose.SigningKey{Algorithm: jose.SignatureAlgorithm(jwk.Algorithm), Key: jwk.Key}
	}
	signer, err := jose.NewSigner(sk, opts)
	if err != nil {
		return "", fmt.Errorf("step upstream: token signer: %w", err)
	}
	tok, err := jose.Signed(signer).Claims(c).Serialize()
	if err != nil {
		return "", fmt.Errorf("step upstream: sign token: %w", err)
	}
	return tok, nil
}

// provisionerKey loads the JWK provisioner's private key: from KeyFile, or fetched from step-ca (the
// encrypted key of the provisioner named Provisioner) and decrypted with PasswordFile's password.
func (u *Upstream) provisionerKey(ctx context.Context) (*jose.JSONWebKey, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.jwk != nil {
		return u.jwk, nil
	}
	var pw []byte
	if u.cfg.PasswordFile != "" {
		var err error
		if pw, err = password(u.cfg.PasswordFile); err != nil {
			return nil, err
		}
	}
	if u.cfg.KeyFile != "" {
		var opts []jose.Option
		if pw != nil {
			opts = append(opts, jose.WithPassword(pw))
		}
		jwk, err := jose.ReadKey(u.cfg.KeyFile, opts...)
		if err != nil {
			return nil, fmt.Errorf("step upstream: key_file %s: %w", u.cfg.KeyFile, err)
		}
		u.jwk = jwk
		return jwk, nil
	}
	cursor := ""
	for {
		var resp struct {
			Provisioners []struct {
				Type         string          `json:"type"`
				Name         string          `json:"name"`
				Key          json.RawMessage `json:"key"`
				EncryptedKey string          `json:"encryptedKey"`
			} `json:"provisioners"`
			NextCursor string `json:"nextCursor"`
		}
		path := "/provisioners?limit=100"
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		if err := u.do(ctx, u.client, http.MethodGet, path, nil, &resp); err != nil {
			return nil, fmt.Errorf("step upstream: list provisioners: %w", err)
		}
		for _, p := range resp.Provisioners {
			if p.Name != u.cfg.Provisioner {
				continue
			}
			if p.Type != "JWK" || p.EncryptedKey == "" {
				return nil, fmt.Errorf("step upstream: provisioner %q is %s without an encrypted key step-ca serves: use a JWK provisioner, or key_file", u.cfg.Provisioner, p.Type)
			}
			plain, err := jose.Decrypt([]byte(p.EncryptedKey), jose.WithPassword(pw))
			if err != nil {
				return nil, fmt.Errorf("step upstream: provisioner %q key does not decrypt with the password in %s: %w", u.cfg.Provisioner, u.cfg.PasswordFile, err)
			}
			jwk := new(jose.JSONWebKey)
			if err := jwk.UnmarshalJSON(plain); err != nil {
				return nil, fmt.Errorf("step upstream: provisioner %q key: %w", u.cfg.Provisioner, err)
			}
			u.jwk = jwk
			return jwk, nil
		}
		if resp.NextCursor == "" || len(resp.Provisioners) == 0 {
			return nil, fmt.Errorf("step upstream: step-ca has no provisioner named %q", u.cfg.Provisioner)
		}
		cursor = resp.NextCursor
	}
}

// MintX509CA sends the CSR to step-ca's sign API for the template's validity and returns the signed
// intermediate, step-ca's intermediates and its roots.
func (u *Upstream) MintX509CA(ctx context.Context, req ca.MintRequest) (ca.MintResult, error) {
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		return ca.MintResult{}, fmt.Errorf("step upstream: parse csr: %w", err)
	}
	var sans []string
	for _, uri := range csr.URIs {
		sans = append(sans, uri.String())
	}
	ott, err := u.token(ctx, csr.Subject.CommonName, sans)
	if err != nil {
		return ca.MintResult{}, err
	}
	notAfter := req.Template.NotAfter
	if u.cfg.X5CCertFile != "" {
		// step-ca signs nothing that outlives the X5C credential: ask for no more, and say so.
		if certs, err := pemutil.ReadCertificateBundle(u.cfg.X5CCertFile); err == nil && len(certs) > 0 && certs[0].NotAfter.Before(notAfter) {
			u.log.Warn("step upstream: the intermediate is limited to the X5C certificate's expiry; renew x5c_cert_file before then",
				"asked_not_after", notAfter, "x5c_not_after", certs[0].NotAfter, "x5c_cert_file", u.cfg.X5CCertFile)
			notAfter = certs[0].NotAfter
		}
	}
	body := map[string]any{
		"csr":       string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: req.CSR})),
		"ott":       ott,
		"notBefore": req.Template.NotBefore.UTC().Format(time.RFC3339),
		"notAfter":  notAfter.UTC().Format(time.RFC3339),
	}
	var resp struct {
		Crt       string   `json:"crt"`
		CA        string   `json:"ca"`
		CertChain []string `json:"certChain"`
	}
	if err := u.do(ctx, u.client, http.MethodPost, "/1.0/sign", body, &resp); err != nil {
		return ca.MintResult{}, fmt.Errorf("step upstream: sign at %s: %w", u.cfg.URL, err)
	}
	pems := resp.CertChain
	if len(pems) == 0 {
		pems = []string{resp.Crt, resp.CA}
	}
	var chain []*x509.Certificate
	for _, p := range pems {
		c, err := parseCert(p)
		if err != nil {
			return ca.MintResult{}, fmt.Errorf("step upstream: sign response: %w", err)
		}
		chain = append(chain, c)
	}
	roots, err := u.X509Roots(ctx)
	if err != nil {
		return ca.MintResult{}, err
	}
	// A root at the end of the chain is published, not sent.
	for len(chain) > 1 && containsCert(roots, chain[len(chain)-1]) {
		chain = chain[:len(chain)-1]
	}
	if chain[0].NotAfter.Before(notAfter.Add(-time.Minute)) {
		u.log.Info("step-ca shortened the intermediate", "asked_not_after", req.Template.NotAfter, "not_after", chain[0].NotAfter)
	}
	return ca.MintResult{Chain: chain, Roots: roots}, nil
}

// X509Roots returns step-ca's roots (GET /roots).
func (u *Upstream) X509Roots(ctx context.Context) ([]*x509.Certificate, error) {
	var resp struct {
		Certificates []string `json:"crts"`
	}
	if err := u.do(ctx, u.client, http.MethodGet, "/roots", nil, &resp); err != nil {
		return nil, fmt.Errorf("step upstream: roots from %s: %w", u.cfg.URL, err)
	}
	var roots []*x509.Certificate
	for _, p := range resp.Certificates {
		c, err := parseCert(p)
		if err != nil {
			return nil, fmt.Errorf("step upstream: roots from %s: %w", u.cfg.URL, err)
		}
		roots = append(roots, c)
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("step upstream: %s returned no roots", u.cfg.URL)
	}
	return roots, nil
}

func parseCert(p string) (*x509.Certificate, error) {
	block, _ := pem.Decode([]byte(p))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

func containsCert(list []*x509.Certificate, c *x509.Certificate) bool {
	for _, l := range list {
		if l.Equal(c) {
			return true
		}
	}
	return false
}

// fingerprint is the hex SHA-256 of a certificate, as `step certificate fingerprint` prints it.
func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}
