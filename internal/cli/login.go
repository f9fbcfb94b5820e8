package cli

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

// A login lives in the user's config directory ($XDG_CONFIG_HOME/kith, else ~/.config/kith), every file
// 0600 in a 0700 directory: login.json (the server and the login), svid.pem (the X.509-SVID chain),
// svid.key (its private key) and bundle.pem (the trust bundle).
const (
	loginFile  = "login.json"
	svidFile   = "svid.pem"
	keyFile    = "svid.key"
	bundleFile = "bundle.pem"
)

// loginState is login.json.
type loginState struct {
	Server         string    `json:"server"` // host:port of the admin TCP listener
	TrustDomain    string    `json:"trust_domain"`
	SPIFFEID       string    `json:"spiffe_id"`
	LoginID        string    `json:"login_id"`
	LoginExpiresAt time.Time `json:"login_expires_at"`
	Method         string    `json:"method"`
}

// configDir is where the login is kept.
func (e *env) configDir() (string, error) {
	if d := e.getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "kith"), nil
	}
	if h := e.getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "kith"), nil
	}
	return "", errors.New("neither XDG_CONFIG_HOME nor HOME is set: set one for kith to keep your login in")
}

// writeSecret writes a file 0600 atomically (a temp file renamed into place).
func writeSecret(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// savedLogin is a login read back from the config directory.
type savedLogin struct {
	dir    string
	state  loginState
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
}

func (e *env) loadLogin() (*savedLogin, error) {
	dir, err := e.configDir()
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(filepath.Join(dir, loginFile))
	if err != nil {
		return nil, err
	}
	l := &savedLogin{dir: dir}
	if err := json.Unmarshal(raw, &l.state); err != nil {
		return nil, fmt.Errorf("%s: %w (log in again: kith login)", filepath.Join(dir, loginFile), err)
	}
	if l.svid, err = x509svid.Load(filepath.Join(dir, svidFile), filepath.Join(dir, keyFile)); err != nil {
		return nil, fmt.Errorf("read your SVID: %w (log in again: kith login)", err)
	}
	td, err := spiffeid.TrustDomainFromString(l.state.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("%s: trust domain: %w", loginFile, err)
	}
	if l.bundle, err = x509bundle.Load(td, filepath.Join(dir, bundleFile)); err != nil {
		return nil, fmt.Errorf("read the trust bundle: %w (log in again: kith login)", err)
	}
	return l, nil
}

// save writes the login's four files.
func (l *savedLogin) save() error {
	state, err := json.MarshalIndent(l.state, "", "  ")
	if err != nil {
		return err
	}
	certs, key, err := l.svid.Marshal()
	if err != nil {
		return fmt.Errorf("encode the SVID: %w", err)
	}
	var bundle []byte
	for _, c := range l.bundle.X509Authorities() {
		bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	// The key first, the state last: a login.json always names files that are there.
	for _, f := range []struct {
		name string
		data []byte
	}{{keyFile, key}, {svidFile, certs}, {bundleFile, bundle}, {loginFile, append(state, '\n')}} {
		if err := writeSecret(filepath.Join(l.dir, f.name), f.data); err != nil {
			return fmt.Errorf("save your login in %s: %w", l.dir, err)
		}
	}
	return nil
}

// newKey makes the key of a user SVID and its CSR.
func newKey(id string) (crypto.Signer, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	u, err := url.Parse(id)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.CertificateRequest{}
	if id != "" {
		tmpl.URIs = []*url.URL{u}
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	return key, csr, err
}

func parseChain(ders [][]byte, key crypto.Signer) (*x509svid.SVID, error) {
	var certs []byte
	for _, d := range ders {
		certs = append(certs, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d})...)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return x509svid.Parse(certs, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

func bundleFromDER(td spiffeid.TrustDomain, ders [][]byte) (*x509bundle.Bundle, error) {
	b := x509bundle.New(td)
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("parse a root of the bundle: %w", err)
		}
		b.AddX509Authority(c)
	}
	return b, nil
}

// serverAddr turns https://host:port (or host:port) into host:port.
func serverAddr(s string) (string, error) {
	if s == "" {
		return "", usage(errors.New("--server is required for the first login: the https://host:port of the server's admin.listen (kith user add prints it)"))
	}
	if rest, ok := strings.CutPrefix(s, "https://"); ok {
		s = strings.TrimSuffix(rest, "/")
	} else if strings.Contains(s, "://") {
		return "", usage(fmt.Errorf("--server %q: use https://host:port", s))
	}
	if !strings.Contains(s, ":") {
		return "", usage(fmt.Errorf("--server %q has no port: use https://host:port", s))
	}
	return s, nil
}

// serverID is the identity the Kith server presents.
func serverID(td spiffeid.TrustDomain) spiffeid.ID {
	id, _ := spiffeid.FromSegments(td, "kith", "server")
	return id
}

func dialTLS(addr string, cfg *tls.Config) (adminv1.AdminServiceClient, func(), error) {
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize)))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	return adminv1.NewAdminServiceClient(conn), func() { conn.Close() }, nil
}

// trustBundle finds the bundle to trust the server with, for a login: --bundle, or the root whose SHA-256
// is --ca-fingerprint among those the server sends, or the bundle of an earlier login to the same server.
func (e *env) trustBundle(ctx context.Context, addr, bundlePath, fingerprint string) (*x509bundle.Bundle, *adminv1.GetLoginConfigResponse, error) {
	var b *x509bundle.Bundle
	switch {
	case bundlePath != "":
		raw, err := os.ReadFile(bundlePath)
		if err != nil {
			return nil, nil, err
		}
		certs, err := parsePEMCerts(raw)
		if err != nil || len(certs) == 0 {
			return nil, nil, usage(fmt.Errorf("--bundle %s holds no PEM certificates (kith bundle show prints them)", bundlePath))
		}
		b = x509bundle.FromX509Authorities(spiffeid.TrustDomain{}, certs)
	case fingerprint != "":
		want := strings.ToLower(strings.TrimPrefix(fingerprint, "sha256:"))
		// The first connection cannot verify the server: it only fetches the roots, of which one must
		// match the fingerprint, which alone is then trusted.
		c, done, err := dialTLS(addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) //nolint:gosec // checked by fingerprint below
		if err != nil {
			return nil, nil, err
		}
		cfg, err := c.GetLoginConfig(ctx, &adminv1.GetLoginConfigRequest{})
		done()
		if err != nil {
			return nil, nil, err
		}
		td, err := spiffeid.TrustDomainFromString(cfg.GetTrustDomain())
		if err != nil {
			return nil, nil, fmt.Errorf("the server's trust domain: %w", err)
		}
		for _, der := range cfg.GetX509Authorities() {
			sum := sha256.Sum256(der)
			if hex.EncodeToString(sum[:]) == want {
				b, err = bundleFromDER(td, [][]byte{der})
				if err != nil {
					return nil, nil, err
				}
			}
		}
		if b == nil {
			return nil, nil, fmt.Errorf("no root of the server at %s has the fingerprint %s: check the address and the fingerprint (kith user add prints both)", addr, fingerprint)
		}
	default:
		l, err := e.loadLogin()
		if err != nil || l.state.Server != addr {
			return nil, nil, usage(errors.New("give --ca-fingerprint sha256:... (kith user add prints it) or --bundle FILE, so that kith can tell the server is yours"))
		}
		b = l.bundle
	}
	// Now the verified connection: the server must present spiffe://TD/kith/server from that bundle.
	var cfg *adminv1.GetLoginConfigResponse
	err := withVerified(addr, b, nil, func(c adminv1.AdminServiceClient) error {
		var err error
		cfg, err = c.GetLoginConfig(ctx, &adminv1.GetLoginConfigRequest{})
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	td, err := spiffeid.TrustDomainFromString(cfg.GetTrustDomain())
	if err != nil {
		return nil, nil, err
	}
	return x509bundle.FromX509Authorities(td, b.X509Authorities()), cfg, nil
}

// anyTD verifies a server SVID against roots whatever their trust domain; the trust domain is then read.
type anyTD struct{ roots []*x509.Certificate }

func (a anyTD) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return x509bundle.FromX509Authorities(td, a.roots), nil
}

// withVerified dials addr trusting bundle b (and presenting svid, if any) and runs f.
func withVerified(addr string, b *x509bundle.Bundle, svid *x509svid.SVID, f func(adminv1.AdminServiceClient) error) error {
	var cfg *tls.Config
	authorize := tlsconfig.AdaptMatcher(func(id spiffeid.ID) error {
		if id.Path() != "/kith/server" {
			return fmt.Errorf("%s is not a Kith server (spiffe://TD/kith/server)", id)
		}
		return nil
	})
	if svid != nil {
		cfg = tlsconfig.MTLSClientConfig(svid, anyTD{b.X509Authorities()}, authorize)
	} else {
		cfg = tlsconfig.TLSClientConfig(anyTD{b.X509Authorities()}, authorize)
	}
	c, done, err := dialTLS(addr, cfg)
	if err != nil {
		return err
	}
	defer done()
	return f(c)
}

func parsePEMCerts(raw []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, raw = pem.Decode(raw)
		if block == nil {
			return out, nil
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}

// remoteAdmin dials the admin TCP listener of the saved login (or --server), renewing the SVID first when
// it is past half its life ("renewed on use").
func (e *env) remoteAdmin(ctx context.Context) (adminv1.AdminServiceClient, func(), error) {
	l, err := e.loadLogin()
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, errors.New("you are not logged in: run kith login (or use the admin socket on the server's host)")
		}
		return nil, nil, err
	}
	if e.server != "" {
		addr, err := serverAddr(e.server)
		if err != nil {
			return nil, nil, err
		}
		if addr != l.state.Server {
			return nil, nil, fmt.Errorf("you are logged in to %s, not %s: run kith login --server https://%s", l.state.Server, addr, addr)
		}
	}
	if err := e.renewIfDue(ctx, l); err != nil {
		return nil, nil, err
	}
	cfg := tlsconfig.MTLSClientConfig(l.svid, l.bundle, tlsconfig.AuthorizeID(serverID(l.bundle.TrustDomain())))
	return dialTLS(l.state.Server, cfg)
}

// renewIfDue renews the SVID past half its life while the login lasts.
func (e *env) renewIfDue(ctx context.Context, l *savedLogin) error {
	leaf := l.svid.Certificates[0]
	now := time.Now()
	if now.Before(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)) {
		return nil
	}
	if now.After(leaf.NotAfter) {
		return fmt.Errorf("your SVID expired at %s: log in again (kith login)", leaf.NotAfter.Format(time.RFC3339))
	}
	key, csr, err := newKey(l.state.SPIFFEID)
	if err != nil {
		return err
	}
	var resp *adminv1.RenewLoginResponse
	err = withVerified(l.state.Server, l.bundle, l.svid, func(c adminv1.AdminServiceClient) error {
		resp, err = c.RenewLogin(ctx, &adminv1.RenewLoginRequest{LoginId: l.state.LoginID, Csr: csr})
		return err
	})
	if err != nil {
		return fmt.Errorf("renew your SVID: %w", err)
	}
	if l.svid, err = parseChain(resp.GetCertChain(), key); err != nil {
		return err
	}
	return l.save()
}

// completeLogin saves what Login returned.
func (e *env) completeLogin(addr string, td spiffeid.TrustDomain, method string, key crypto.Signer, resp *adminv1.LoginResponse) (*savedLogin, error) {
	dir, err := e.configDir()
	if err != nil {
		return nil, err
	}
	svid, err := parseChain(resp.GetCertChain(), key)
	if err != nil {
		return nil, fmt.Errorf("the server's answer: %w", err)
	}
	b, err := bundleFromDER(td, resp.GetX509Authorities())
	if err != nil {
		return nil, err
	}
	l := &savedLogin{dir: dir, svid: svid, bundle: b, state: loginState{Server: addr, TrustDomain: td.Name(), SPIFFEID: resp.GetSpiffeId(),
		LoginID: resp.GetLoginId(), LoginExpiresAt: resp.GetLoginExpiresAt().AsTime(), Method: method}}
	return l, l.save()
}
