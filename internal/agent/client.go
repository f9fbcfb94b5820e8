package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/attestation/node"
	"github.com/kithid/kith/attestation/node/jointoken"
	"github.com/kithid/kith/attestation/node/k8spsat"
	"github.com/kithid/kith/ca"
)

// bundleSource serves the cache's current X.509 roots to go-spiffe's TLS verification.
type bundleSource struct{ a *Agent }

var _ x509bundle.Source = bundleSource{}

func (b bundleSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	bundle := b.a.cache.Bundle()
	if bundle == nil || bundle.TrustDomain() != td {
		return nil, fmt.Errorf("no bundle for trust domain %q", td)
	}
	return bundle.X509Bundle(), nil
}

// dial connects to the server's agent API, authenticating the server as spiffe://TD/kith/server and,
// when withSVID, presenting the agent's SVID. It does not block: the connection is made by the first call.
func (a *Agent) dial(withSVID bool) (*grpc.ClientConn, error) {
	return a.dialAddr(a.servers.current(), withSVID)
}

// dialAddr is dial to the server at addr.
func (a *Agent) dialAddr(addr string, withSVID bool) (*grpc.ClientConn, error) {
	serverID, err := spiffeid.FromSegments(a.td, "kith", "server")
	if err != nil {
		return nil, err
	}
	var tc = tlsconfig.TLSClientConfig(bundleSource{a}, tlsconfig.AuthorizeID(serverID))
	if withSVID {
		tc = tlsconfig.MTLSClientConfig(a.svid, bundleSource{a}, tlsconfig.AuthorizeID(serverID))
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return nil, fmt.Errorf("connect to server %s: %w", addr, err)
	}
	return conn, nil
}

// evidence is what the agent proves its node with: its projected service-account token (node_attestor
// k8s_psat) or its join token.
func (a *Agent) evidence() node.Evidence {
	c := a.cfg.Config
	if c.NodeAttestor == k8spsat.Type {
		return k8spsat.Evidence{Cluster: c.K8sPSAT.Cluster, TokenPath: c.K8sPSAT.TokenPath}
	}
	return jointoken.Evidence(c.JoinToken)
}

// canAttest reports whether the agent can attest (again) without an operator: with a join token it was
// given, or a projected token the kubelet keeps fresh.
func (a *Agent) canAttest() bool {
	return a.cfg.Config.JoinToken != "" || a.cfg.Config.NodeAttestor == k8spsat.Type
}

// attest proves the node with the join token and takes the agent SVID it gets, from the current server or,
// when it cannot be reached, the next ones.
func (a *Agent) attest(ctx context.Context) error {
	var errs []error
	for range a.servers.all() {
		err := a.attestAt(ctx, a.servers.current())
		if err == nil || !isUnavailable(err) {
			return err
		}
		errs = append(errs, err)
		a.servers.failover()
	}
	return errors.Join(errs...)
}

// isUnavailable reports whether err says the server could not be reached.
func isUnavailable(err error) bool {
	var se interface{ GRPCStatus() *status.Status }
	return errors.As(err, &se) && se.GRPCStatus().Code() == codes.Unavailable
}

func (a *Agent) attestAt(ctx context.Context, addr string) error {
	conn, err := a.dialAddr(addr, false)
	if err != nil {
		return err
	}
	defer conn.Close()
	key, csr, err := ca.NewKeyAndCSR(spiffeid.ID{})
	if err != nil {
		return err
	}
	evidence := a.evidence()
	payload, err := evidence.Payload(ctx)
	if err != nil {
		return fmt.Errorf("attest: %w", err)
	}
	resp, err := agentv1.NewAgentServiceClient(conn).Attest(ctx, &agentv1.AttestRequest{AttestationType: evidence.Type(), Payload: payload, Csr: csr})
	if status.Code(err) == codes.Unavailable {
		return fmt.Errorf("attest with %s at %s: %w", evidence.Type(), addr, err)
	}
	if err != nil {
		return fmt.Errorf("attest with %s: %w", evidence.Type(), errors.New(status.Convert(err).Message()))
	}
	return a.svid.Accept(resp.GetSvidChain(), key, resp.GetBundle())
}
