package agentapi_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/internal/config"
	"github.com/kithid/kith/internal/server"
)

// TestServerWiring checks the agent API as the real server serves it: an agent joins with a token made
// through the admin API, syncs over mTLS, and the admin API reports it connected.
func TestServerWiring(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := &config.Server{DataDir: t.TempDir(), TrustDomain: "example.org"}
	cfg.Listen.GRPC = "127.0.0.1:0"
	cfg.Listen.HTTP = "127.0.0.1:0"
	if err := cfg.Finish(); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(ctx, server.Config{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server run: %v", err)
		}
	})
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatalf("server exited: %v", err)
	}

	adminConn, err := grpc.NewClient("unix://"+cfg.Listen.AdminSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer adminConn.Close()
	admin := adminv1.NewAdminServiceClient(adminConn)
	tok, err := admin.CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{Name: "node1"})
	if err != nil {
		t.Fatal(err)
	}

	td := srv.TrustDomain()
	bundle := x509bundle.FromX509Authorities(td, srv.CA().Bundle().X509Authorities())
	serverID := spiffeid.RequireFromPath(td, "/kith/server")
	dial := func(cfg credentials.TransportCredentials) agentv1.AgentServiceClient {
		conn, err := grpc.NewClient(srv.GRPCAddr().String(), grpc.WithTransportCredentials(cfg))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return agentv1.NewAgentServiceClient(conn)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	anon := dial(credentials.NewTLS(tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(serverID))))
	resp, err := anon.Attest(ctx, &agentv1.AttestRequest{AttestationType: "join_token", Payload: []byte(tok.GetSecret()), Csr: csr})
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	svid, err := x509svid.ParseRaw(concat(resp.GetSvidChain()), mustMarshalKey(t, key))
	if err != nil {
		t.Fatal(err)
	}

	agent := dial(credentials.NewTLS(tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(serverID))))
	stream, err := agent.Sync(ctx, &agentv1.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	got, err := admin.GetAgent(ctx, &adminv1.GetAgentRequest{Id: resp.GetAgentId()})
	if err != nil {
		t.Fatal(err)
	}
	if !got.GetAgent().GetConnected() {
		t.Errorf("admin GetAgent(%s).connected = false while the agent syncs", resp.GetAgentId())
	}
}

func concat(chain [][]byte) []byte {
	var out []byte
	for _, c := range chain {
		out = append(out, c...)
	}
	return out
}

func mustMarshalKey(t *testing.T, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
