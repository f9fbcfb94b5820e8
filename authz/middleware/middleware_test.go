package middleware_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/extauthz"
	"github.com/kithid/kith/authz/middleware"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/catest"
	"github.com/kithid/kith/ca/keymanager/memory"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("example.org")
	frontend = spiffeid.RequireFromPath(td, "/ns/prod/sa/frontend")
	batch    = spiffeid.RequireFromPath(td, "/ns/prod/sa/batch")
	payments = spiffeid.RequireFromPath(td, "/ns/prod/sa/payments")
)

// fixture is a CA, an engine with grants for frontend, and a checker that
// asks an ext_authz server for the engine over a unix socket.
type fixture struct {
	ca      *ca.CA
	checker middleware.Checker
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	c, err := ca.New(ctx, ca.Config{TrustDomain: td, Keys: memory.New(), Store: catest.NewStore()})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := authz.New(authz.Config{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []authz.Grant{
		{ID: "g-http", Caller: frontend.String(), Target: payments.String(), Methods: []string{"GET"}, Paths: []string{"/hello"}},
		{ID: "g-grpc", Caller: frontend.String(), Target: payments.String(), Methods: []string{"POST"}, Paths: []string{"/grpc.health.v1.Health/*"}},
	} {
		if err := e.PutGrant(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	s, err := extauthz.New(extauthz.Config{Decider: e, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "authz.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	s.Register(g)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &fixture{ca: c, checker: middleware.NewExtAuthzChecker(conn)}
}

// svid issues an X.509-SVID for id from a key made here.
func (f *fixture) svid(t *testing.T, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := f.ca.SignX509SVID(context.Background(), ca.X509SVIDRequest{ID: id, CSR: csr})
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}
}

func (f *fixture) serverTLS(t *testing.T) *tls.Config {
	svid := f.svid(t, payments)
	cfg := tlsconfig.MTLSServerConfig(svid, f.ca.Bundle(), tlsconfig.AuthorizeMemberOf(td))
	// httptest fills Certificates when empty, and they would win over GetCertificate.
	cfg.Certificates = []tls.Certificate{{Certificate: [][]byte{svid.Certificates[0].Raw, svid.Certificates[1].Raw}, PrivateKey: svid.PrivateKey}}
	return cfg
}

func (f *fixture) clientTLS(t *testing.T, id spiffeid.ID) *tls.Config {
	return tlsconfig.MTLSClientConfig(f.svid(t, id), f.ca.Bundle(), tlsconfig.AuthorizeID(payments))
}

func TestHTTP(t *testing.T) {
	f := newFixture(t)
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello "+r.Header.Get("X-Kith-Caller")+" "+r.Header.Get("X-Kith-Decision")+" env="+r.Header.Get("X-Kith-Caller-Env"))
	})
	srv := httptest.NewUnstartedServer(middleware.HTTP(f.checker, payments, app))
	srv.TLS = f.serverTLS(t)
	srv.StartTLS()
	t.Cleanup(srv.Close)

	tests := []struct {
		name       string
		caller     spiffeid.ID
		method     string
		path       string
		header     map[string]string
		wantStatus int
		wantBody   string
		wantReason string
	}{
		{
			name: "a granted caller reaches the handler with the decision headers", caller: frontend, method: "GET", path: "/hello",
			header:     map[string]string{"X-Kith-Caller-Env": "forged"},
			wantStatus: 200, wantBody: "hello spiffe://example.org/ns/prod/sa/frontend allow env=",
		},
		{
			name: "a caller without a grant gets 403 with the reason", caller: batch, method: "GET", path: "/hello",
			wantStatus: 403, wantReason: "no grant allows spiffe://example.org/ns/prod/sa/batch to call spiffe://example.org/ns/prod/sa/payments (GET /hello)",
		},
		{
			name: "a granted caller is denied another path", caller: frontend, method: "GET", path: "/admin?x=1",
			wantStatus: 403, wantReason: "no grant allows spiffe://example.org/ns/prod/sa/frontend to call spiffe://example.org/ns/prod/sa/payments (GET /admin)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := &http.Client{Transport: &http.Transport{TLSClientConfig: f.clientTLS(t, tt.caller)}}
			req, err := http.NewRequest(tt.method, srv.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tt.wantStatus, body)
			}
			if tt.wantStatus == 200 {
				if diff := cmp.Diff(tt.wantBody, string(body)); diff != "" {
					t.Errorf("body (-want +got):\n%s", diff)
				}
				return
			}
			if got := resp.Header.Get("X-Kith-Reason"); got != tt.wantReason {
				t.Errorf("X-Kith-Reason = %q, want %q", got, tt.wantReason)
			}
			if !strings.Contains(string(body), tt.wantReason) {
				t.Errorf("body %q does not contain the reason", body)
			}
		})
	}
}

func TestHTTPWithoutAClientCertificateIsDenied(t *testing.T) {
	f := newFixture(t)
	h := middleware.HTTP(f.checker, payments, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("handler called")
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/hello", nil))
	if rec.Code != 403 || rec.Header().Get("X-Kith-Reason") != "no caller identity" {
		t.Errorf("status %d reason %q, want 403 and no caller identity", rec.Code, rec.Header().Get("X-Kith-Reason"))
	}
}

// failingChecker cannot reach the agent.
type failingChecker struct{}

func (failingChecker) Check(context.Context, spiffeid.ID, spiffeid.ID, string, string) (bool, []string, map[string]string, error) {
	return true, nil, nil, errors.New("dial unix /run/kith/authz.sock: no such file or directory")
}

func TestMiddlewareFailsClosed(t *testing.T) {
	t.Run("over HTTP", func(t *testing.T) {
		h := middleware.HTTP(failingChecker{}, payments, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			t.Error("handler called")
		}))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/hello", nil))
		if rec.Code != 403 || rec.Header().Get("X-Kith-Reason") != "authorization check failed" {
			t.Errorf("status %d reason %q, want 403 and authorization check failed", rec.Code, rec.Header().Get("X-Kith-Reason"))
		}
	})
	t.Run("over gRPC", func(t *testing.T) {
		i := middleware.UnaryServerInterceptor(failingChecker{}, payments)
		_, err := i(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/grpc.health.v1.Health/Check"}, func(context.Context, any) (any, error) {
			t.Error("handler called")
			return nil, nil
		})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("error %v, want PermissionDenied", err)
		}
	})
}

// callerHealth is a health server that also reports the x-kith-caller
// metadata the interceptor added.
type callerHealth struct {
	*health.Server
	seen chan string
}

func (h callerHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	h.seen <- strings.Join(md.Get("x-kith-caller"), ",")
	return h.Server.Check(ctx, req)
}

func TestGRPCInterceptors(t *testing.T) {
	f := newFixture(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(f.serverTLS(t))),
		grpc.UnaryInterceptor(middleware.UnaryServerInterceptor(f.checker, payments)),
		grpc.StreamInterceptor(middleware.StreamServerInterceptor(f.checker, payments)),
	)
	hs := callerHealth{Server: health.NewServer(), seen: make(chan string, 10)}
	healthpb.RegisterHealthServer(g, hs)
	go g.Serve(lis)
	t.Cleanup(g.Stop)

	dial := func(t *testing.T, id spiffeid.ID) healthpb.HealthClient {
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(f.clientTLS(t, id))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return healthpb.NewHealthClient(conn)
	}
	ctx := context.Background()

	t.Run("a granted caller is served and named in the metadata", func(t *testing.T) {
		resp, err := dial(t, frontend).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("status %v, want SERVING", resp.GetStatus())
		}
		if got := <-hs.seen; got != frontend.String() {
			t.Errorf("x-kith-caller = %q, want %q", got, frontend)
		}
	})
	t.Run("a caller without a grant is denied", func(t *testing.T) {
		_, err := dial(t, batch).Check(ctx, &healthpb.HealthCheckRequest{})
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "no grant allows spiffe://example.org/ns/prod/sa/batch") {
			t.Errorf("error %v, want PermissionDenied naming the missing grant", err)
		}
	})
	t.Run("a granted caller may watch", func(t *testing.T) {
		stream, err := dial(t, frontend).Watch(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("status %v, want SERVING", resp.GetStatus())
		}
	})
	t.Run("a caller without a grant may not watch", func(t *testing.T) {
		stream, err := dial(t, batch).Watch(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); status.Code(err) != codes.PermissionDenied {
			t.Errorf("error %v, want PermissionDenied", err)
		}
	})
}
