// Package disk is an upstream authority kept in files: an existing CA certificate and its key (PEM, the
// key readable by its owner only), optionally the chain above the certificate and a separate bundle of
// roots to publish. It signs the Kith CA's intermediates itself, never past its own certificate's
// NotAfter, and re-reads the files for every call, so a replaced certificate takes effect at the next
// rotation.
package disk

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"go.step.sm/crypto/pemutil"

	"github.com/kithid/kith/ca"
)

// Config names the files of a CA on disk.
type Config struct {
	CertFile string // required: the CA certificate that signs Kith's intermediates (PEM)
	KeyFile  string // required: its private key (PEM, PKCS#8, PKCS#1 or SEC 1), mode 0600 or stricter
	// ChainFile holds the certificates above CertFile up to but excluding the root (PEM), sent after
	// Kith's intermediate in every SVID chain. Zero: none (CertFile is the root, or signed by it).
	ChainFile string
	// RootsFile holds the roots to publish in the trust bundle (PEM). Zero: CertFile itself, which must
	// then be self-signed.
	RootsFile string
	Now       func() time.Time // zero: time.Now
}

// Upstream is a CA on disk.
type Upstream struct{ cfg Config }

var _ ca.UpstreamAuthority = (*Upstream)(nil)

// New checks the files once (see Load) and returns the upstream.
func New(cfg Config) (*Upstream, error) {
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("disk upstream: cert_file and key_file are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	u := &Upstream{cfg: cfg}
	if _, err := u.load(); err != nil {
		return nil, err
	}
	return u, nil
}

// loaded is the files' content, checked.
type loaded struct {
	cert   *x509.Certificate
	signer crypto.Signer
	chain  []*x509.Certificate // above cert, excluding the root
	roots  []*x509.Certificate
}

// load reads and checks the files: the key is private to its owner and matches the certificate, the
// certificate is a CA valid now, and the certificate and chain verify to one of the roots.
func (u *Upstream) load() (*loaded, error) {
	c := u.cfg
	var l loaded
	fi, err := os.Stat(c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("disk upstream: key file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("disk upstream: key file %s has mode %04o: make it readable by its owner only (chmod 600 %s)",
			c.KeyFile, fi.Mode().Perm(), c.KeyFile)
	}
	keyPEM, err := os.ReadFile(c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("disk upstream: key file: %w", err)
	}
	key, err := pemutil.ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("disk upstream: key file %s: %w", c.KeyFile, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("disk upstream: key file %s does not hold a private key", c.KeyFile)
	}
	l.signer = signer
	certs, err := readCerts(c.CertFile)
	if err != nil {
		return nil, err
	}
	l.cert = certs[0]
	now := u.cfg.Now()
	switch {
	case !l.cert.IsCA || !l.cert.BasicConstraintsValid:
		return nil, fmt.Errorf("disk upstream: cert file %s: %q is not a CA certificate (basicConstraints CA:TRUE is missing)",
			c.CertFile, l.cert.Subject)
	case l.cert.KeyUsage != 0 && l.cert.KeyUsage&x509.KeyUsageCertSign == 0:
		return nil, fmt.Errorf("disk upstream: cert file %s: %q may not sign certificates (keyUsage lacks keyCertSign)", c.CertFile, l.cert.Subject)
	case l.cert.MaxPathLen == 0 && l.cert.MaxPathLenZero:
		return nil, fmt.Errorf("disk upstream: cert file %s: %q has pathlen 0, so it may not sign Kith's intermediate: use a CA with pathlen ≥ 1 or none",
			c.CertFile, l.cert.Subject)
	case now.After(l.cert.NotAfter):
		return nil, fmt.Errorf("disk upstream: cert file %s: %q expired at %s", c.CertFile, l.cert.Subject, l.cert.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(l.cert.NotBefore):
		return nil, fmt.Errorf("disk upstream: cert file %s: %q is not valid before %s", c.CertFile, l.cert.Subject, l.cert.NotBefore.UTC().Format(time.RFC3339))
	}
	if pub, ok := l.cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(signer.Public()) {
		return nil, fmt.Errorf("disk upstream: key file %s is not the key of the certificate in %s", c.KeyFile, c.CertFile)
	}
	l.chain = certs[1:]
	if c.ChainFile != "" {
		chain, err := readCerts(c.ChainFile)
		if err != nil {
			return nil, err
		}
		l.chain = append(l.chain, chain...)
	}
	if c.RootsFile != "" {
		if l.roots, err = readCerts(c.RootsFile); err != nil {
			return nil, err
		}
	} else {
		if l.cert.CheckSignatureFrom(l.cert) != nil || len(l.chain) > 0 {
			return nil, fmt.Errorf("disk upstream: cert file %s: %q is not a self-signed root: name the roots to publish in roots_file",
				c.CertFile, l.cert.Subject)
		}
		l.roots = []*x509.Certificate{l.cert}
	}
	// cert, then the chain, each signed by the next; the last is a root or signed by one. Roots are
	// published, not sent in chains.
	full := append([]*x509.Certificate{l.cert}, l.chain...)
	for i := 0; i+1 < len(full); i++ {
		if err := full[i].CheckSignatureFrom(full[i+1]); err != nil {
			return nil, fmt.Errorf("disk upstream: chain file %s: certificate %d (%q) is not signed by the next: %w", c.ChainFile, i, full[i].Subject, err)
		}
	}
	last := full[len(full)-1]
	if !slices.ContainsFunc(l.roots, func(r *x509.Certificate) bool { return last.Equal(r) || last.CheckSignatureFrom(r) == nil }) {
		return nil, fmt.Errorf("disk upstream: %q (%s) is not signed by any root in %s", last.Subject, c.CertFile, rootsName(c))
	}
	l.chain = slices.DeleteFunc(l.chain, func(x *x509.Certificate) bool { return slices.ContainsFunc(l.roots, x.Equal) })
	return &l, nil
}

func rootsName(c Config) string {
	if c.RootsFile != "" {
		return c.RootsFile
	}
	return c.CertFile
}

func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("disk upstream: %w", err)
	}
	certs, err := pemutil.ParseCertificateBundle(data)
	if err != nil {
		return nil, fmt.Errorf("disk upstream: %s: %w", path, err)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("disk upstream: %s holds no PEM certificate", path)
	}
	return certs, nil
}

// MintX509CA signs the CA's template for the CSR's key with the certificate on disk, capping NotAfter at
// the certificate's and at every chain certificate's NotAfter.
func (u *Upstream) MintX509CA(_ context.Context, req ca.MintRequest) (ca.MintResult, error) {
	l, err := u.load()
	if err != nil {
		return ca.MintResult{}, err
	}
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		return ca.MintResult{}, fmt.Errorf("disk upstream: parse csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return ca.MintResult{}, fmt.Errorf("disk upstream: csr signature: %w", err)
	}
	tmpl := *req.Template
	for _, c := range append([]*x509.Certificate{l.cert}, l.chain...) {
		if tmpl.NotAfter.After(c.NotAfter) {
			tmpl.NotAfter = c.NotAfter
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, l.cert, csr.PublicKey, l.signer)
	if err != nil {
		return ca.MintResult{}, fmt.Errorf("disk upstream: sign intermediate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return ca.MintResult{}, fmt.Errorf("disk upstream: parse intermediate: %w", err)
	}
	chain := []*x509.Certificate{cert}
	if !slices.ContainsFunc(l.roots, l.cert.Equal) {
		chain = append(chain, l.cert)
	}
	return ca.MintResult{Chain: append(chain, l.chain...), Roots: l.roots}, nil
}

// X509Roots returns the roots file's certificates, or the self-signed certificate.
func (u *Upstream) X509Roots(context.Context) ([]*x509.Certificate, error) {
	l, err := u.load()
	if err != nil {
		return nil, err
	}
	return l.roots, nil
}
