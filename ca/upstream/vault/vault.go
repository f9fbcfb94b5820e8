// Package vault is an upstream authority that is a Vault (or OpenBao) PKI secrets engine: the Kith CA's
// intermediate CSRs are signed by <mount>/root/sign-intermediate (or <mount>/issuer/<issuer>/sign-intermediate),
// with the trust domain's SPIFFE ID in the CSR (Vault ignores uri_sans when use_csr_values is set) and a
// TTL no longer than the signing issuer has left; the roots published are the mount's self-signed issuers,
// so a root rotated in the mount (root/rotate, then made default) is published before it signs.
//
// Vault authenticates Kith by a token read from a file (re-read when the file changes), by AppRole (role
// ID and a secret ID file) or by Kubernetes auth (the server's projected service-account token). A token
// from a login is renewed once less than half its TTL is left, and Kith logs in again when it cannot be
// renewed (not renewable, past its max TTL, revoked).
package vault

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/kithid/kith/ca"
)

// Config configures a Vault upstream.
type Config struct {
	Address string // required: e.g. https://vault.example.org:8200
	Mount   string // the PKI mount; zero: pki
	// Issuer is the issuer reference (name or ID) that signs; zero: the mount's default issuer
	// (root/sign-intermediate).
	Issuer    string
	Namespace string // Vault Enterprise / OpenBao namespace; zero: none
	// CACertFile is the CA (PEM) that signed Vault's TLS certificate; zero: the system roots.
	CACertFile    string
	TLSServerName string // zero: the Address host

	// Exactly one of TokenFile, AppRole (RoleID set) and Kubernetes (Role set).
	TokenFile  string // a Vault token, re-read when the file changes
	AppRole    AppRole
	Kubernetes Kubernetes

	Now    func() time.Time // zero: time.Now
	Logger *slog.Logger     // zero: discard
}

// AppRole is Vault's AppRole auth method.
type AppRole struct {
	Mount        string // zero: approle
	RoleID       string
	SecretIDFile string // mode 0600 or stricter
}

// Kubernetes is Vault's Kubernetes auth method with the server's projected service-account token.
type Kubernetes struct {
	Mount     string // zero: kubernetes
	Role      string
	TokenFile string // zero: /var/run/secrets/kubernetes.io/serviceaccount/token
}

// Upstream is a Vault PKI upstream authority.
type Upstream struct {
	cfg    Config
	client *vaultapi.Client
	log    *slog.Logger

	mu        sync.Mutex
	token     string
	expires   time.Time     // zero: does not expire (or unknown, for a token file)
	ttl       time.Duration // the lease the token was given
	renewable bool
	fileMod   time.Time // the token file's modification time when read
}

var _ ca.UpstreamAuthority = (*Upstream)(nil)

// New checks cfg and makes the client; it does not call Vault.
func New(cfg Config) (*Upstream, error) {
	if cfg.Address == "" {
		return nil, errors.New("vault upstream: address is required")
	}
	if cfg.Mount == "" {
		cfg.Mount = "pki"
	}
	cfg.Mount = strings.Trim(cfg.Mount, "/")
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	n := 0
	if cfg.TokenFile != "" {
		n++
	}
	if cfg.AppRole.RoleID != "" || cfg.AppRole.SecretIDFile != "" {
		n++
		if cfg.AppRole.RoleID == "" || cfg.AppRole.SecretIDFile == "" {
			return nil, errors.New("vault upstream: approle needs role_id and secret_id_file")
		}
		if cfg.AppRole.Mount == "" {
			cfg.AppRole.Mount = "approle"
		}
		if err := checkPrivate(cfg.AppRole.SecretIDFile); err != nil {
			return nil, err
		}
	}
	if cfg.Kubernetes.Role != "" {
		n++
		if cfg.Kubernetes.Mount == "" {
			cfg.Kubernetes.Mount = "kubernetes"
		}
		if cfg.Kubernetes.TokenFile == "" {
			cfg.Kubernetes.TokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("vault upstream: configure exactly one auth method (token_file, approle or kubernetes), not %d", n)
	}
	if cfg.TokenFile != "" {
		if err := checkPrivate(cfg.TokenFile); err != nil {
			return nil, err
		}
	}
	vc := vaultapi.DefaultConfig()
	vc.Address = cfg.Address
	vc.MaxRetries = 0 // the CA retries with its own backoff
	vc.Timeout = 30 * time.Second
	if cfg.CACertFile != "" || cfg.TLSServerName != "" {
		if err := vc.ConfigureTLS(&vaultapi.TLSConfig{CACert: cfg.CACertFile, TLSServerName: cfg.TLSServerName}); err != nil {
			return nil, fmt.Errorf("vault upstream: tls: %w", err)
		}
	}
	client, err := vaultapi.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault upstream: %w", err)
	}
	client.ClearToken()
	if cfg.Namespace != "" {
		client.SetNamespace(cfg.Namespace)
	}
	return &Upstream{cfg: cfg, client: client, log: cfg.Logger}, nil
}

func checkPrivate(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("vault upstream: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("vault upstream: %s has mode %04o: make it readable by its owner only (chmod 600 %s)", p, fi.Mode().Perm(), p)
	}
	return nil
}

func readSecret(p string) (string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("vault upstream: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("vault upstream: %s is empty", p)
	}
	return s, nil
}

// ensureToken makes sure the client holds a token with time left: it re-reads a changed token file,
// renews a token past half its TTL, and logs in again when that fails or the token has expired.
func (u *Upstream) ensureToken(ctx context.Context) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	now := u.cfg.Now()
	if u.cfg.TokenFile != "" {
		fi, err := os.Stat(u.cfg.TokenFile)
		if err != nil {
			return fmt.Errorf("vault upstream: token file: %w", err)
		}
		if u.token == "" || !fi.ModTime().Equal(u.fileMod) {
			tok, err := readSecret(u.cfg.TokenFile)
			if err != nil {
				return err
			}
			u.token, u.fileMod, u.expires = tok, fi.ModTime(), time.Time{}
			u.client.SetToken(tok)
			if err := u.lookupSelf(ctx, now); err != nil {
				return err
			}
			u.log.Info("vault token read", "file", u.cfg.TokenFile, "expires", u.expires)
		}
		if !u.expires.IsZero() && u.renewable && u.expires.Sub(now) < u.ttl/2 {
			if err := u.renew(ctx, now); err != nil {
				u.log.Warn("vault token renewal failed; replace the token file before it expires", "file", u.cfg.TokenFile, "expires", u.expires, "error", err)
			}
		}
		return nil
	}
	if u.token != "" && (u.expires.IsZero() || u.expires.Sub(now) >= u.ttl/2) {
		return nil
	}
	if u.token != "" && u.renewable && now.Before(u.expires) {
		err := u.renew(ctx, now)
		if err == nil && u.expires.Sub(now) >= u.ttl/2 {
			return nil
		}
		u.log.Info("vault token not renewed (max ttl reached or renewal refused); logging in again", "error", err)
	}
	return u.login(ctx, now)
}

// lookupSelf learns the token's TTL. u.mu must be held.
func (u *Upstream) lookupSelf(ctx context.Context, now time.Time) error {
	s, err := u.client.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return fmt.Errorf("vault upstream: look up the token from %s: %w", u.cfg.TokenFile, err)
	}
	ttl, err := s.TokenTTL()
	if err != nil {
		return fmt.Errorf("vault upstream: token ttl: %w", err)
	}
	u.renewable, _ = s.TokenIsRenewable()
	u.ttl = ttl
	if ttl > 0 {
		u.expires = now.Add(ttl)
		if d, ok := s.Data["creation_ttl"]; ok {
			if n, err := parseSeconds(d); err == nil && n > 0 {
				u.ttl = n
			}
		}
	}
	return nil
}

func parseSeconds(v any) (time.Duration, error) {
	switch n := v.(type) {
	case interface{ Int64() (int64, error) }:
		i, err := n.Int64()
		return time.Duration(i) * time.Second, err
	case float64:
		return time.Duration(n) * time.Second, nil
	}
	return 0, fmt.Errorf("not a number: %v", v)
}

// renew renews the token for its TTL. u.mu must be held.
func (u *Upstream) renew(ctx context.Context, now time.Time) error {
	s, err := u.client.Auth().Token().RenewSelfWithContext(ctx, int(u.ttl.Seconds()))
	if err != nil {
		return fmt.Errorf("vault upstream: renew token: %w", err)
	}
	if s.Auth == nil {
		return errors.New("vault upstream: renew token: no auth in the response")
	}
	u.expires = now.Add(time.Duration(s.Auth.LeaseDuration) * time.Second)
	u.renewable = s.Auth.Renewable
	u.log.Info("vault token renewed", "expires", u.expires)
	return nil
}

// login authenticates with AppRole or Kubernetes auth. u.mu must be held.
func (u *Upstream) login(ctx context.Context, now time.Time) error {
	var mount string
	var body map[string]any
	switch {
	case u.cfg.AppRole.RoleID != "":
		sid, err := readSecret(u.cfg.AppRole.SecretIDFile)
		if err != nil {
			return err
		}
		mount, body = u.cfg.AppRole.Mount, map[string]any{"role_id": u.cfg.AppRole.RoleID, "secret_id": sid}
	default:
		jwt, err := readSecret(u.cfg.Kubernetes.TokenFile)
		if err != nil {
			return err
		}
		mount, body = u.cfg.Kubernetes.Mount, map[string]any{"role": u.cfg.Kubernetes.Role, "jwt": jwt}
	}
	u.client.ClearToken()
	s, err := u.client.Logical().WriteWithContext(ctx, path.Join("auth", mount, "login"), body)
	if err != nil {
		u.token = ""
		return fmt.Errorf("vault upstream: log in at auth/%s: %w", mount, err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return fmt.Errorf("vault upstream: log in at auth/%s: no token in the response", mount)
	}
	u.token, u.renewable = s.Auth.ClientToken, s.Auth.Renewable
	u.ttl = time.Duration(s.Auth.LeaseDuration) * time.Second
	u.expires = time.Time{}
	if u.ttl > 0 {
		u.expires = now.Add(u.ttl)
	}
	u.client.SetToken(u.token)
	u.log.Info("vault login", "auth", mount, "expires", u.expires, "renewable", u.renewable)
	return nil
}

// issuerPath is the path of the signing issuer: issuer/<ref>, or issuer/default.
func (u *Upstream) issuerPath() string {
	ref := u.cfg.Issuer
	if ref == "" {
		ref = "default"
	}
	return path.Join(u.cfg.Mount, "issuer", ref)
}

// readIssuer returns the issuer's certificate and its chain (the issuer first).
func (u *Upstream) readIssuer(ctx context.Context, p string) ([]*x509.Certificate, error) {
	s, err := u.client.Logical().ReadWithContext(ctx, p+"/json")
	if err != nil {
		return nil, fmt.Errorf("vault upstream: read %s: %w", p, err)
	}
	if s == nil {
		return nil, fmt.Errorf("vault upstream: %s not found (is %s a PKI mount with an issuer?)", p, u.cfg.Mount)
	}
	var chain []*x509.Certificate
	if raw, ok := s.Data["ca_chain"].([]any); ok && len(raw) > 0 {
		for _, r := range raw {
			c, err := parsePEM(fmt.Sprint(r))
			if err != nil {
				return nil, fmt.Errorf("vault upstream: %s ca_chain: %w", p, err)
			}
			chain = append(chain, c...)
		}
	} else {
		c, err := parsePEM(fmt.Sprint(s.Data["certificate"]))
		if err != nil {
			return nil, fmt.Errorf("vault upstream: %s certificate: %w", p, err)
		}
		chain = c
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("vault upstream: %s has no certificate", p)
	}
	return chain, nil
}

// refused reports whether Vault refused the token (403: revoked, expired early, or lost by a Vault that
// restarted without its storage).
func refused(err error) bool {
	var re *vaultapi.ResponseError
	return errors.As(err, &re) && re.StatusCode == 403
}

// again calls f and, when Vault refuses a token Kith logged in for, logs in again and calls f once more.
// A token from a file cannot be replaced here: the error says so.
func (u *Upstream) again(ctx context.Context, f func() error) error {
	err := f()
	if err == nil || !refused(err) {
		return err
	}
	if u.cfg.TokenFile != "" {
		return fmt.Errorf("%w (Vault refused the token in %s: write a valid one there)", err, u.cfg.TokenFile)
	}
	u.mu.Lock()
	u.token, u.expires = "", time.Time{}
	u.mu.Unlock()
	u.log.Warn("vault refused the token (revoked, or Vault restarted without it); logging in again", "error", err)
	if err := u.ensureToken(ctx); err != nil {
		return err
	}
	return f()
}

// MintX509CA has the issuer sign the CSR as an intermediate (pathlen 0) for the TTL asked, clamped to what
// the issuer (and the chain above it) has left.
func (u *Upstream) MintX509CA(ctx context.Context, req ca.MintRequest) (ca.MintResult, error) {
	var res ca.MintResult
	err := u.again(ctx, func() error {
		var err error
		res, err = u.mint(ctx, req)
		return err
	})
	return res, err
}

func (u *Upstream) mint(ctx context.Context, req ca.MintRequest) (ca.MintResult, error) {
	if err := u.ensureToken(ctx); err != nil {
		return ca.MintResult{}, err
	}
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		return ca.MintResult{}, fmt.Errorf("vault upstream: parse csr: %w", err)
	}
	issuer, err := u.readIssuer(ctx, u.issuerPath())
	if err != nil {
		return ca.MintResult{}, err
	}
	now := u.cfg.Now()
	ttl := req.TTL
	for _, c := range issuer {
		if left := c.NotAfter.Sub(now) - time.Minute; left < ttl {
			ttl = left
		}
	}
	if ttl < req.TTL {
		u.log.Info("intermediate ttl clamped to the vault issuer's expiry", "asked", req.TTL, "ttl", ttl.Round(time.Second), "issuer_not_after", issuer[0].NotAfter)
	}
	if ttl <= time.Minute {
		return ca.MintResult{}, fmt.Errorf("vault upstream: issuer %q expires at %s: nothing left to sign an intermediate with; rotate the mount's root",
			issuer[0].Subject, issuer[0].NotAfter.UTC().Format(time.RFC3339))
	}
	signPath := path.Join(u.cfg.Mount, "root", "sign-intermediate")
	if u.cfg.Issuer != "" {
		signPath = path.Join(u.issuerPath(), "sign-intermediate")
	}
	body := map[string]any{
		"csr":             string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: req.CSR})),
		"common_name":     csr.Subject.CommonName,
		"use_csr_values":  true, // keeps the CSR's subject and its URI SAN (uri_sans would be ignored)
		"ttl":             fmt.Sprintf("%ds", int64(ttl.Seconds())),
		"max_path_length": 0,
		"format":          "pem",
	}
	s, err := u.client.Logical().WriteWithContext(ctx, signPath, body)
	if err != nil {
		return ca.MintResult{}, fmt.Errorf("vault upstream: %s: %w", signPath, err)
	}
	if s == nil {
		return ca.MintResult{}, fmt.Errorf("vault upstream: %s: empty response", signPath)
	}
	cert, err := parsePEM(fmt.Sprint(s.Data["certificate"]))
	if err != nil || len(cert) == 0 {
		return ca.MintResult{}, fmt.Errorf("vault upstream: %s: certificate: %v", signPath, err)
	}
	roots, err := u.roots(ctx)
	if err != nil {
		return ca.MintResult{}, err
	}
	chain := []*x509.Certificate{cert[0]}
	for _, c := range issuer {
		if !containsCert(roots, c) && !isSelfSigned(c) {
			chain = append(chain, c)
		}
	}
	return ca.MintResult{Chain: chain, Roots: roots}, nil
}

// X509Roots returns the mount's self-signed issuers and the root of the signing issuer's chain.
func (u *Upstream) X509Roots(ctx context.Context) ([]*x509.Certificate, error) {
	var roots []*x509.Certificate
	err := u.again(ctx, func() error {
		var err error
		roots, err = u.roots(ctx)
		return err
	})
	return roots, err
}

func (u *Upstream) roots(ctx context.Context) ([]*x509.Certificate, error) {
	if err := u.ensureToken(ctx); err != nil {
		return nil, err
	}
	var roots []*x509.Certificate
	add := func(c *x509.Certificate) {
		if isSelfSigned(c) && !containsCert(roots, c) {
			roots = append(roots, c)
		}
	}
	issuer, err := u.readIssuer(ctx, u.issuerPath())
	if err != nil {
		return nil, err
	}
	for _, c := range issuer {
		add(c)
	}
	list, err := u.client.Logical().ListWithContext(ctx, path.Join(u.cfg.Mount, "issuers"))
	if err != nil {
		return nil, fmt.Errorf("vault upstream: list %s/issuers: %w", u.cfg.Mount, err)
	}
	if list != nil {
		keys, _ := list.Data["keys"].([]any)
		for _, k := range keys {
			chain, err := u.readIssuer(ctx, path.Join(u.cfg.Mount, "issuer", fmt.Sprint(k)))
			if err != nil {
				return nil, err
			}
			add(chain[0])
		}
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("vault upstream: no self-signed root in %s: name the chain's root in the mount (pki/issuers/import/cert)", u.cfg.Mount)
	}
	return roots, nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return c.CheckSignatureFrom(c) == nil
}

func containsCert(list []*x509.Certificate, c *x509.Certificate) bool {
	for _, l := range list {
		if l.Equal(c) {
			return true
		}
	}
	return false
}

func parsePEM(s string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := []byte(s)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return out, nil
}
