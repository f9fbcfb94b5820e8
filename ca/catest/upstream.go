package catest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kithid/kith/ca"
)

var _ ca.UpstreamAuthority = (*Upstream)(nil)

// Upstream is an in-memory ca.UpstreamAuthority, the test stand-in for Vault PKI or step-ca: a root and an
// intermediate of its own, which signs the CA's intermediate CSRs as a CA certificate (from the CSR's
// subject and URI SANs, as a signing service would, not from the template) for the requested TTL capped at
// its intermediate's NotAfter. RotateRoot and DropRoot change its roots; SetMintErr and SetRootsErr make
// calls fail. It is safe for concurrent use.
type Upstream struct {
	now func() time.Time

	mu       sync.Mutex
	signer   *ecdsa.PrivateKey // the key of inter, which signs
	inter    *x509.Certificate
	roots    []*x509.Certificate // what X509Roots returns, oldest first
	mints    []ca.MintRequest
	mintErr  error
	rootsErr error
}

// NewUpstream returns an Upstream with a fresh root (valid ten years) and intermediate (five years); now is
// its clock (nil: time.Now).
func NewUpstream(t testing.TB, now func() time.Time) *Upstream {
	t.Helper()
	if now == nil {
		now = time.Now
	}
	u := &Upstream{now: now}
	if err := u.newRoot(); err != nil {
		t.Fatalf("new upstream: %v", err)
	}
	return u
}

// newRoot makes a root and an intermediate under it, adds the root to the roots and signs with the
// intermediate from now on. u.mu must be held or u not yet shared.
func (u *Upstream) newRoot() error {
	now := u.now()
	n := len(u.roots) + 1
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	rootTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(int64(n)),
		Subject:               pkix.Name{CommonName: fmt.Sprintf("Upstream Root %d", n)},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	root, err := create(rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		return err
	}
	interKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	interTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(int64(100 + n)),
		Subject:               pkix.Name{CommonName: fmt.Sprintf("Upstream Intermediate %d", n)},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(5 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
	inter, err := create(interTmpl, root, &interKey.PublicKey, rootKey)
	if err != nil {
		return err
	}
	u.roots = append(u.roots, root)
	u.inter, u.signer = inter, interKey
	return nil
}

func create(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, key *ecdsa.PrivateKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// MintX509CA signs req.CSR with the current intermediate and returns it with that intermediate and the
// roots.
func (u *Upstream) MintX509CA(_ context.Context, req ca.MintRequest) (ca.MintResult, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.mintErr != nil {
		return ca.MintResult{}, u.mintErr
	}
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		return ca.MintResult{}, fmt.Errorf("parse csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return ca.MintResult{}, fmt.Errorf("csr signature: %w", err)
	}
	if req.TTL <= 0 {
		return ca.MintResult{}, errors.New("ttl must be positive")
	}
	now := u.now()
	notAfter := now.Add(req.TTL)
	if notAfter.After(u.inter.NotAfter) {
		notAfter = u.inter.NotAfter
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return ca.MintResult{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		Subject:               csr.Subject,
		URIs:                  csr.URIs,
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, u.inter, csr.PublicKey, u.signer)
	if err != nil {
		return ca.MintResult{}, fmt.Errorf("sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return ca.MintResult{}, err
	}
	u.mints = append(u.mints, req)
	return ca.MintResult{Chain: []*x509.Certificate{cert, u.inter}, Roots: slices.Clone(u.roots)}, nil
}

// X509Roots returns the current roots, oldest first.
func (u *Upstream) X509Roots(context.Context) ([]*x509.Certificate, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.rootsErr != nil {
		return nil, u.rootsErr
	}
	return slices.Clone(u.roots), nil
}

// Roots returns the current roots, oldest first, ignoring SetRootsErr.
func (u *Upstream) Roots() []*x509.Certificate {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.roots)
}

// Intermediate returns the upstream intermediate that signs now.
func (u *Upstream) Intermediate() *x509.Certificate {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.inter
}

// Mints returns the successful MintX509CA requests so far.
func (u *Upstream) Mints() []ca.MintRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.mints)
}

// RotateRoot adds a new root and signs under it from now on; the old roots are still returned.
func (u *Upstream) RotateRoot(t testing.TB) *x509.Certificate {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := u.newRoot(); err != nil {
		t.Fatalf("rotate upstream root: %v", err)
	}
	return u.roots[len(u.roots)-1]
}

// DropRoot stops returning root from X509Roots and MintX509CA.
func (u *Upstream) DropRoot(root *x509.Certificate) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.roots = slices.DeleteFunc(u.roots, root.Equal)
}

// SetMintErr makes MintX509CA fail with err (nil: succeed).
func (u *Upstream) SetMintErr(err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.mintErr = err
}

// SetRootsErr makes X509Roots fail with err (nil: succeed).
func (u *Upstream) SetRootsErr(err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.rootsErr = err
}
