package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/internal/server/apierr"
)

// agentTLSConfig presents the server's own SVID and verifies any client certificate as an X.509-SVID of
// this trust domain. A client certificate is optional at the TLS layer because Attest is called before the
// agent has one; every other method requires it (checked by the agent API).
func (s *Server) agentTLSConfig(own *ownSVID) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: own.getCertificate,
		ClientAuth:     tls.RequestClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return nil
			}
			certs := make([]*x509.Certificate, 0, len(raw))
			for _, r := range raw {
				c, err := x509.ParseCertificate(r)
				if err != nil {
					return fmt.Errorf("parse client certificate: %w", err)
				}
				certs = append(certs, c)
			}
			bundle := x509bundle.FromX509Authorities(s.td, s.ca.Bundle().X509Authorities())
			if _, _, err := x509svid.Verify(certs, bundle); err != nil {
				return fmt.Errorf("client certificate is not a valid svid of %s: %w", s.td, err)
			}
			return nil
		},
	}
}

func (s *Server) newAgentServer() (*grpc.Server, error) {
	id, err := spiffeid.FromSegments(s.td, "kith", "server")
	if err != nil {
		return nil, err
	}
	own := &ownSVID{id: id, signer: s.ca, ttl: s.cfg.Config.SVID.AgentTTL.D(), now: s.cfg.Now, log: s.log}
	if err := own.renew(context.Background()); err != nil {
		return nil, err
	}
	s.own = own
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(s.agentTLSConfig(own))),
		grpc.ChainUnaryInterceptor(apierr.UnaryInterceptor(s.log)),
		grpc.ChainStreamInterceptor(apierr.StreamInterceptor(s.log)),
		grpc.ConnectionTimeout(10*time.Second),
		// A snapshot of 10,000 entries is one message.
		grpc.MaxSendMsgSize(64<<20),
	)
	agentv1.RegisterAgentServiceServer(srv, s.agent)
	return srv, nil
}
