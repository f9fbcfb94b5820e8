package rotation

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/ca"
)

// Renewer asks the server to renew the agent's SVID.
type Renewer interface {
	RenewAgent(ctx context.Context, in *agentv1.RenewAgentRequest, opts ...grpc.CallOption) (*agentv1.RenewAgentResponse, error)
}

var _ Renewer = agentv1.AgentServiceClient(nil)

// AgentSVIDConfig builds an AgentSVID.
type AgentSVIDConfig struct {
	// Bundle verifies the SVIDs the server issues; required.
	Bundle x509bundle.Source
	// ApplyBundle takes the trust bundle that comes with an SVID; zero: the bundle is ignored.
	ApplyBundle func(*agentv1.Bundle) error
	// OnChange is called after the SVID changes (to save it); zero: nothing.
	OnChange func()
	Now      func() time.Time // zero: time.Now
	Logger   *slog.Logger     // zero: discard
}

// AgentSVID holds the agent's own SVID, the client certificate of its connections to the server, and
// renews it at half its life (counted from when the agent got it).
type AgentSVID struct {
	cfg  AgentSVIDConfig
	svid atomic.Pointer[x509svid.SVID]

	mu      sync.Mutex
	serial  string    // of the SVID renewAt was computed for
	renewAt time.Time // guarded by mu
}

var _ x509svid.Source = (*AgentSVID)(nil)

// NewAgentSVID makes an empty AgentSVID: Set or Accept gives it one.
func NewAgentSVID(cfg AgentSVIDConfig) *AgentSVID {
	if cfg.ApplyBundle == nil {
		cfg.ApplyBundle = func(*agentv1.Bundle) error { return nil }
	}
	if cfg.OnChange == nil {
		cfg.OnChange = func() {}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &AgentSVID{cfg: cfg}
}

// Load is the current SVID, nil before the agent has one.
func (a *AgentSVID) Load() *x509svid.SVID { return a.svid.Load() }

// Set installs an SVID restored from disk.
func (a *AgentSVID) Set(s *x509svid.SVID) { a.svid.Store(s) }

// ID is the agent's SPIFFE ID, zero before it has an SVID.
func (a *AgentSVID) ID() spiffeid.ID {
	if s := a.svid.Load(); s != nil {
		return s.ID
	}
	return spiffeid.ID{}
}

// GetX509SVID serves the SVID as the agent's client certificate.
func (a *AgentSVID) GetX509SVID() (*x509svid.SVID, error) {
	if s := a.svid.Load(); s != nil {
		return s, nil
	}
	return nil, errors.New("agent has no svid")
}

// RenewAt is half-way through the SVID's life as counted from when the agent got it.
func (a *AgentSVID) RenewAt() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	leaf := a.svid.Load().Certificates[0]
	if serial := leaf.SerialNumber.Text(16); a.serial != serial {
		a.serial, a.renewAt = serial, Time(a.cfg.Now(), leaf.NotBefore, leaf.NotAfter, 0.5)
	}
	return a.renewAt
}

// Renew replaces the SVID before it expires.
func (a *AgentSVID) Renew(ctx context.Context, client Renewer) error {
	cur := a.svid.Load()
	key, csr, err := ca.NewKeyAndCSR(cur.ID)
	if err != nil {
		return err
	}
	resp, err := client.RenewAgent(ctx, &agentv1.RenewAgentRequest{Csr: csr})
	if err != nil {
		return fmt.Errorf("renew agent svid: %w", err)
	}
	return a.Accept(resp.GetSvidChain(), key, resp.GetBundle())
}

// Accept takes an SVID (and the bundle sent with it) from the server, after checking it against the bundle.
func (a *AgentSVID) Accept(chainDER [][]byte, key *ecdsa.PrivateKey, b *agentv1.Bundle) error {
	if b != nil {
		if err := a.cfg.ApplyBundle(b); err != nil {
			return err
		}
	}
	chain, err := parseChain(chainDER)
	if err != nil {
		return fmt.Errorf("agent svid: %w", err)
	}
	id, _, err := x509svid.Verify(chain, a.cfg.Bundle)
	if err != nil {
		return fmt.Errorf("agent svid from the server does not verify: %w", err)
	}
	a.svid.Store(&x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key})
	a.cfg.Logger.Info("agent svid issued", "spiffe_id", id.String(), "expires", chain[0].NotAfter)
	a.cfg.OnChange()
	return nil
}

func parseChain(ders [][]byte) ([]*x509.Certificate, error) {
	if len(ders) == 0 {
		return nil, fmt.Errorf("empty certificate chain")
	}
	out := make([]*x509.Certificate, len(ders))
	for i, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out[i] = c
	}
	return out, nil
}
