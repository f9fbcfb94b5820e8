package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/kithid/kith/internal/federation"
)

// issuer is the OIDC issuer: ca.jwt_issuer, else the advertised HTTP URL (with the port actually bound when
// port 0 was asked for). JWT-SVIDs carry it as iss and the discovery document names it.
func (s *Server) issuer() string {
	if iss := s.cfg.Config.CA.JWTIssuer; iss != "" {
		return iss
	}
	iss := s.cfg.Config.Listen.AdvertiseHTTP
	if strings.HasSuffix(iss, ":0") {
		if a := s.HTTPAddr(); a != nil {
			iss = "http://" + a.String()
		}
	}
	return iss
}

// oidcHandler serves only the OIDC discovery document and the JWKS (listen.oidc_discovery).
func (s *Server) oidcHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", s.serveOIDC)
	mux.HandleFunc("GET /.well-known/jwks.json", s.serveJWKS)
	mux.HandleFunc("GET /keys", s.serveJWKS)
	return mux
}

// bundleEndpoint returns the bundle endpoint's server (federation.bundle_endpoint), nil when none is
// configured.
func (s *Server) bundleEndpoint() (*http.Server, error) {
	be := s.cfg.Config.Federation.BundleEndpoint
	if be.Address == "" {
		return nil, nil
	}
	h, err := federation.NewEndpointHandler(federation.EndpointConfig{TrustDomain: s.td, Source: s.ca, RefreshHint: be.RefreshHint.D()})
	if err != nil {
		return nil, err
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	switch be.Profile {
	case "https_web":
		kp := &keyPair{cert: be.CertFile, key: be.KeyFile}
		if _, err := kp.get(nil); err != nil {
			return nil, fmt.Errorf("federation.bundle_endpoint: %w", err)
		}
		tlsCfg.GetCertificate = kp.get
	default:
		// s.own is made with the agent API's server, after this: read it at each handshake.
		tlsCfg.GetCertificate = func(h *tls.ClientHelloInfo) (*tls.Certificate, error) { return s.own.getCertificate(h) }
	}
	mux := http.NewServeMux()
	mux.Handle("/", h)
	return &http.Server{Handler: mux, TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second}, nil
}

// serveTLS serves srv on a TLS listener at addr; the certificate comes from srv.TLSConfig.
func serveTLS(ctx context.Context, srv *http.Server, lis net.Listener) error {
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	return ignoreClosed(srv.Serve(tls.NewListener(lis, srv.TLSConfig)))
}
