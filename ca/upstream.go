package ca

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"time"
)

// UpstreamAuthority signs the CA's signing intermediates and names the roots relying parties trust. It is
// what a Vault PKI mount, a step-ca or a CA kept on disk is to Kith (SPIRE calls it an UpstreamAuthority:
// MintX509CA and PublishedX509Roots; smallstep a CertificateAuthorityService).
//
// Without one (Config.Upstream nil) the CA is its own root: it keeps self-signed roots as authorities,
// signs its intermediates with them through this same contract (see selfSignedRoot) and rotates them with
// an overlap, as the package documentation describes.
//
// With one, the CA never holds a root key. Roots are what X509Roots returns: the CA records each as a root
// authority without a key (KeyID empty) and publishes it in the trust bundle; when a root is no longer
// returned it is retired and stays published for Config.MaxX509SVIDTTL, but never while an intermediate
// under it still signs. The CA learns of a change by calling X509Roots from Tick, which Run calls at least
// once a minute, and from the Roots of every MintX509CA result; an implementation may cache. Root rotation
// is the upstream's business ([CA.Rotate] with root set is an invalid request): it must go on returning
// the old root, and signing under it, until the CA has moved to an intermediate under the new one, which
// happens within Config.IntermediateTTL.
type UpstreamAuthority interface {
	// MintX509CA signs req.CSR as a CA certificate for the CA's intermediate key.
	MintX509CA(ctx context.Context, req MintRequest) (MintResult, error)
	// X509Roots returns the upstream roots to publish in the trust bundle now.
	X509Roots(ctx context.Context) ([]*x509.Certificate, error)
}

// MintRequest asks an upstream authority for a signing intermediate.
type MintRequest struct {
	// CSR is a DER PKCS#10 request signed by the intermediate's key, with the template's subject and its URI
	// SAN, the trust domain's ID. What an upstream that signs requests (Vault, step-ca) sends on.
	CSR []byte
	// Template is the profile the CA asks for: subject, serial, validity (NotBefore a minute back,
	// NotAfter TTL ahead), IsCA with MaxPathLen 0, cert-sign and CRL-sign key usage, the subject key ID and
	// the URI SAN. An upstream that builds certificates itself (a CA on disk) starts from it; one that signs
	// requests may override what its own policy sets. Its public key is the CSR's.
	Template *x509.Certificate
	// TTL is the lifetime asked for (Config.IntermediateTTL). An upstream may shorten it, for instance to its
	// own NotAfter; the CA then rotates the intermediate earlier.
	TTL time.Duration
}

// MintResult is what an upstream authority returns for a MintRequest.
type MintResult struct {
	// Chain is the new intermediate first, then the upstream's own intermediates, each signed by the next,
	// up to but excluding the root. The CA serves it after the leaf in every X.509-SVID chain.
	Chain []*x509.Certificate
	// Roots are the upstream's current roots; the last certificate of Chain is signed by one of them.
	Roots []*x509.Certificate
}

// selfSignedRoot is the default upstream authority: one of the CA's own self-signed roots, signing with its
// key from the key manager. Which root signs (the active one, or the one being rotated in) is decided by
// the rotation logic, which makes one selfSignedRoot per call; the roots themselves are created, rotated
// and published by the CA, in the same transactions as the intermediates they sign, which is why this lives
// in package ca rather than beside the other upstreams in ca/upstream.
type selfSignedRoot struct{ root *authority }

var _ UpstreamAuthority = selfSignedRoot{}

// MintX509CA signs the template with the root's key for the CSR's public key, capping NotAfter at the
// root's.
func (s selfSignedRoot) MintX509CA(_ context.Context, req MintRequest) (MintResult, error) {
	if s.root.signer == nil {
		return MintResult{}, fmt.Errorf("root %s has no key", s.root.ID)
	}
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		return MintResult{}, fmt.Errorf("parse intermediate csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return MintResult{}, fmt.Errorf("intermediate csr signature: %w", err)
	}
	tmpl := *req.Template
	if tmpl.NotAfter.After(s.root.NotAfter) {
		tmpl.NotAfter = s.root.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, s.root.cert, csr.PublicKey, s.root.signer)
	if err != nil {
		return MintResult{}, fmt.Errorf("create %s certificate: %w", KindX509Intermediate, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return MintResult{}, fmt.Errorf("parse %s certificate: %w", KindX509Intermediate, err)
	}
	return MintResult{Chain: []*x509.Certificate{cert}, Roots: []*x509.Certificate{s.root.cert}}, nil
}

// X509Roots returns the root.
func (s selfSignedRoot) X509Roots(context.Context) ([]*x509.Certificate, error) {
	return []*x509.Certificate{s.root.cert}, nil
}

// minter returns what signs an intermediate for the CA: the configured upstream, or root.
func (c *CA) minter(root *authority) UpstreamAuthority {
	if c.upstream != nil {
		return c.upstream
	}
	return selfSignedRoot{root}
}
