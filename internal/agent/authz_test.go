package agent_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

func checkRequest(caller, target, method, path string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Principal: caller, Address: &corev3.Address{}},
		Destination: &authv3.AttributeContext_Peer{Principal: target},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: path, Headers: map[string]string{":method": method, ":path": path},
		}},
	}}
}

// waitDecision polls the agent's ext_authz socket until the decision is want, returning how long it took.
func waitDecision(t *testing.T, c authv3.AuthorizationClient, req *authv3.CheckRequest, want code.Code) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < 5*time.Second {
		resp, err := c.Check(context.Background(), req)
		if err == nil && code.Code(resp.GetStatus().GetCode()) == want {
			return time.Since(start)
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("decision never became %v for %s → %s", want, req.GetAttributes().GetSource().GetPrincipal(), req.GetAttributes().GetDestination().GetPrincipal())
	return 0
}

func TestGrantsAreEnforcedOnTheAgentAndSurviveAServerOutage(t *testing.T) {
	h := newHarness(t)
	h.startServer()
	h.startAgent()
	const frontend, payments, scott = "spiffe://example.org/frontend", "spiffe://example.org/payments", "spiffe://example.org/user/scott"
	h.createEntry(frontend, 0, "unix:uid:1001")
	h.createEntry(payments, 0, "unix:uid:1002")
	conn, err := grpc.NewClient("unix://"+filepath.Join(h.dir, "authz.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := authv3.NewAuthorizationClient(conn)
	admin := h.srv.Admin()
	ctx := context.Background()

	allowed := checkRequest(frontend, payments, "GET", "/api/orders")
	waitDecision(t, c, allowed, code.Code_PERMISSION_DENIED)

	if _, err := admin.CreateGrant(ctx, &adminv1.CreateGrantRequest{Grant: &adminv1.Grant{Caller: frontend, Target: payments, Methods: []string{"GET"}, Paths: []string{"/api/*"}}}); err != nil {
		t.Fatal(err)
	}
	took := waitDecision(t, c, allowed, code.Code_OK)
	t.Logf("grant → enforced on the agent in %s", took)
	waitDecision(t, c, checkRequest(frontend, payments, "DELETE", "/api/orders"), code.Code_PERMISSION_DENIED)
	waitDecision(t, c, checkRequest(frontend, payments, "GET", "/admin"), code.Code_PERMISSION_DENIED)
	waitDecision(t, c, checkRequest(scott, payments, "GET", "/api/orders"), code.Code_PERMISSION_DENIED)

	g, err := admin.CreateGrant(ctx, &adminv1.CreateGrantRequest{Grant: &adminv1.Grant{Caller: scott, Target: payments}})
	if err != nil {
		t.Fatal(err)
	}
	waitDecision(t, c, checkRequest(scott, payments, "GET", "/api/orders"), code.Code_OK)
	if _, err := admin.RevokeGrants(ctx, &adminv1.RevokeGrantsRequest{Id: g.GetGrant().GetId()}); err != nil {
		t.Fatal(err)
	}
	took = waitDecision(t, c, checkRequest(scott, payments, "GET", "/api/orders"), code.Code_PERMISSION_DENIED)
	t.Logf("revoke → denied on the agent in %s", took)

	h.stopSrv()
	waitDecision(t, c, allowed, code.Code_OK)
	h.stopAg()
	h.startAgent()
	conn2, err := grpc.NewClient("unix://"+filepath.Join(h.dir, "authz.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	c2 := authv3.NewAuthorizationClient(conn2)
	waitDecision(t, c2, allowed, code.Code_OK)
	waitDecision(t, c2, checkRequest(scott, payments, "GET", "/api/orders"), code.Code_PERMISSION_DENIED)
}
