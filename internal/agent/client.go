package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/attestation/node"
	"github.com/kithid/kith/attestation/node/jointoken"
	"github.com/kithid/kith/ca"
)

// bundleSource serves the cache's current X.509 roots to go-spiffe's TLS verification.
type bundleSource struct{ a *Agent }

func (b bundleSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	bundle := b.a.cache.Bundle()
	if bundle == nil || bundle.TrustDomain() != td {
		return nil, fmt.Errorf("no bundle for trust domain %q", td)
	}
	return bundle.X509Bundle(), nil
}

// svidSource serves the agent's own SVID as its client certificate.
type svidSource struct{ a *Agent }

func (s svidSource) GetX509SVID() (*x509svid.SVID, error) {
	if svid := s.a.agentSVID.Load(); svid != nil {
		return svid, nil
	}
	return nil, fmt.Errorf("agent has no svid")
}

// dial connects to the server's agent API, authenticating the server as spiffe://TD/kith/server and,
// when withSVID, presenting the agent's SVID.
func (a *Agent) dial(withSVID bool) (*grpc.ClientConn, agentv1.AgentServiceClient, error) {
	serverID, err := spiffeid.FromSegments(a.td, "kith", "server")
	if err != nil {
		return nil, nil, err
	}
	var tc = tlsconfig.TLSClientConfig(bundleSource{a}, tlsconfig.AuthorizeID(serverID))
	if withSVID {
		tc = tlsconfig.MTLSClientConfig(svidSource{a}, bundleSource{a}, tlsconfig.AuthorizeID(serverID))
	}
	conn, err := grpc.NewClient(a.cfg.Config.Server, grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to server %s: %w", a.cfg.Config.Server, err)
	}
	return conn, agentv1.NewAgentServiceClient(conn), nil
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

// attest proves the node with the join token and returns the agent SVID.
func (a *Agent) attest(ctx context.Context) error {
	conn, client, err := a.dial(false)
	if err != nil {
		return err
	}
	defer conn.Close()
	key, csr, err := ca.NewKeyAndCSR(spiffeid.ID{})
	if err != nil {
		return err
	}
	var evidence node.Evidence = jointoken.Evidence(a.cfg.Config.JoinToken)
	payload, err := evidence.Payload(ctx)
	if err != nil {
		return fmt.Errorf("attest: %w", err)
	}
	resp, err := client.Attest(ctx, &agentv1.AttestRequest{AttestationType: evidence.Type(), Payload: payload, Csr: csr})
	if err != nil {
		return fmt.Errorf("attest with join token: %w", errors.New(status.Convert(err).Message()))
	}
	return a.acceptAgentSVID(resp.GetSvidChain(), key, resp.GetBundle())
}

// renew replaces the agent SVID before it expires.
func (a *Agent) renew(ctx context.Context, client agentv1.AgentServiceClient) error {
	cur := a.agentSVID.Load()
	key, csr, err := ca.NewKeyAndCSR(cur.ID)
	if err != nil {
		return err
	}
	resp, err := client.RenewAgent(ctx, &agentv1.RenewAgentRequest{Csr: csr})
	if err != nil {
		return fmt.Errorf("renew agent svid: %w", err)
	}
	return a.acceptAgentSVID(resp.GetSvidChain(), key, resp.GetBundle())
}

func (a *Agent) acceptAgentSVID(chainDER [][]byte, key *ecdsa.PrivateKey, b *agentv1.Bundle) error {
	if b != nil {
		if err := a.applyBundle(b); err != nil {
			return err
		}
	}
	chain, err := parseChain(chainDER)
	if err != nil {
		return fmt.Errorf("agent svid: %w", err)
	}
	id, _, err := x509svid.Verify(chain, bundleSource{a})
	if err != nil {
		return fmt.Errorf("agent svid from the server does not verify: %w", err)
	}
	a.agentSVID.Store(&x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key})
	a.log.Info("agent svid issued", "spiffe_id", id.String(), "expires", chain[0].NotAfter)
	a.markDirty()
	return nil
}
