package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/kithid/kith/ca"
)

// x509Signer is the part of the CA the server's own SVID needs.
type x509Signer interface {
	SignX509SVID(ctx context.Context, req ca.X509SVIDRequest) ([]*x509.Certificate, error)
}

// ownSVID is the server's own X.509-SVID (spiffe://TD/kith/server), used as its TLS certificate on the
// agent API, renewed at half-life.
type ownSVID struct {
	id     spiffeid.ID
	signer x509Signer
	ttl    time.Duration
	now    func() time.Time
	log    *slog.Logger
	cur    atomic.Pointer[x509svid.SVID]
}

func (o *ownSVID) renew(ctx context.Context) error {
	key, csr, err := ca.NewKeyAndCSR(o.id)
	if err != nil {
		return fmt.Errorf("server svid: %w", err)
	}
	chain, err := o.signer.SignX509SVID(ctx, ca.X509SVIDRequest{ID: o.id, CSR: csr, TTL: o.ttl})
	if err != nil {
		return fmt.Errorf("sign server svid: %w", err)
	}
	o.cur.Store(&x509svid.SVID{ID: o.id, Certificates: chain, PrivateKey: key})
	return nil
}

// GetX509SVID implements x509svid.Source.
func (o *ownSVID) GetX509SVID() (*x509svid.SVID, error) {
	s := o.cur.Load()
	if s == nil {
		return nil, fmt.Errorf("server svid not ready")
	}
	return s, nil
}

func (o *ownSVID) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s, err := o.GetX509SVID()
	if err != nil {
		return nil, err
	}
	cert := &tls.Certificate{PrivateKey: s.PrivateKey, Leaf: s.Certificates[0]}
	for _, c := range s.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert, nil
}

// Run renews the SVID at half its life (or on a CA change) until ctx is done.
func (o *ownSVID) Run(ctx context.Context, caChanged <-chan struct{}) error {
	for {
		cur := o.cur.Load()
		wait := time.Minute
		if cur != nil {
			// Half of the life left after issuance (NotBefore is backdated).
			wait = cur.Certificates[0].NotAfter.Sub(o.now()) / 2
		}
		t := time.NewTimer(max(wait, time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-caChanged:
		case <-t.C:
		}
		t.Stop()
		if err := o.renew(ctx); err != nil {
			o.log.Error("renew server svid", "error", err)
		}
	}
}
