// Package kubelettest is a kubelet for tests: an HTTPS server with bearer-token authentication that
// serves GET /pods, the kubelet endpoint the k8s workload attestor reads.
package kubelettest

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Config says whom the kubelet lets in and what it lists.
type Config struct {
	// Authenticate accepts a bearer token (nil error) or refuses it (the error is the 401's body). A real
	// kubelet asks the API server (TokenReview) and checks get on nodes/proxy (SubjectAccessReview).
	Authenticate func(ctx context.Context, token string) error
	// Pods lists the pods on the node.
	Pods func(ctx context.Context) ([]corev1.Pod, error)
}

// Server is a running test kubelet.
type Server struct {
	URL    string // https://127.0.0.1:port
	CAFile string // PEM of the server's self-signed certificate
	// Requests counts the GET /pods answered (authenticated or not).
	Requests atomic.Int64
}

// Start starts a kubelet that stops when tb ends.
func Start(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	s := &Server{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/pods" || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		s.Requests.Add(1)
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		if err := cfg.Authenticate(r.Context(), tok); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		pods, err := cfg.Pods(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}, Items: pods})
	}))
	srv.StartTLS()
	tb.Cleanup(srv.Close)
	s.URL = srv.URL
	s.CAFile = filepath.Join(tb.TempDir(), "kubelet-ca.pem")
	if err := os.WriteFile(s.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		tb.Fatal(err)
	}
	return s
}
