package server

import (
	"encoding/json"
	"net/http"

	"github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/kithid/kith/internal/console"
)

func (s *Server) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := s.health.check(); err != nil {
			http.Error(w, "store not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if len(s.ca.Bundle().X509Authorities()) == 0 {
			http.Error(w, "ca not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
		// A damaged audit log does not stop issuance (see auditAnchor.verify): it is reported, not failed.
		if ok, problem := s.anchor.intact(); !ok {
			_, _ = w.Write([]byte("warning: audit log: " + problem + "\n"))
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(prometheus.GathererFunc(s.gatherMetrics), promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /.well-known/jwks.json", s.serveJWKS)
	mux.HandleFunc("GET /keys", s.serveJWKS)
	mux.HandleFunc("GET /.well-known/openid-configuration", s.serveOIDC)
	mux.HandleFunc("GET /v1/bundle", s.serveBundle)
	mux.HandleFunc("POST /v1/policy/webhook", s.policy.ServeWebhook)
	if s.console != nil {
		mux.Handle(console.Prefix, s.console)
		mux.Handle("GET /ui", http.RedirectHandler(console.Prefix, http.StatusMovedPermanently))
	}
	return mux
}

// serveJWKS serves the JWT-SVID signing keys as a plain JWKS for OIDC relying parties.
func (s *Server) serveJWKS(w http.ResponseWriter, _ *http.Request) {
	var set jose.JSONWebKeySet
	for kid, key := range s.ca.Bundle().JWTAuthorities() {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: string(jose.ES256), Use: "sig"})
	}
	writeJSON(w, set)
}

func (s *Server) serveOIDC(w http.ResponseWriter, _ *http.Request) {
	issuer := s.issuer()
	writeJSON(w, map[string]any{
		"issuer":                                issuer,
		"jwks_uri":                              issuer + "/.well-known/jwks.json",
		"authorization_endpoint":                "",
		"response_types_supported":              []string{"id_token"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"ES256"},
	})
}

// serveBundle serves the SPIFFE bundle (roots and JWT keys) for bootstrapping and federation.
func (s *Server) serveBundle(w http.ResponseWriter, _ *http.Request) {
	doc, err := s.ca.Bundle().Marshal()
	if err != nil {
		http.Error(w, "marshal bundle: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(doc)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "max-age=60")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// AddMetrics serves g's metrics on /metrics too (kith dev adds its agent's). Names must not collide with
// the server's own.
func (s *Server) AddMetrics(g prometheus.Gatherer) {
	s.extraMu.Lock()
	defer s.extraMu.Unlock()
	s.extraMetrics = append(s.extraMetrics, g)
}

func (s *Server) gatherMetrics() ([]*dto.MetricFamily, error) {
	s.extraMu.Lock()
	gs := append(prometheus.Gatherers{s.metrics.reg}, s.extraMetrics...)
	s.extraMu.Unlock()
	return gs.Gather()
}
