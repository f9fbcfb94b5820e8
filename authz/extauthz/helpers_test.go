package extauthz_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/extauthz"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/catest"
	"github.com/kithid/kith/ca/keymanager/memory"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("example.org")
	frontend = spiffeid.RequireFromPath(td, "/ns/prod/sa/frontend")
	payments = spiffeid.RequireFromPath(td, "/ns/prod/sa/payments")
	ledger   = spiffeid.RequireFromPath(td, "/ns/prod/sa/ledger")
	batch    = spiffeid.RequireFromPath(td, "/ns/prod/sa/batch")
	devTool  = spiffeid.RequireFromPath(td, "/ns/dev/sa/tool")
	scott    = spiffeid.RequireFromPath(td, "/user/scott")
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newCA(t testing.TB) *ca.CA {
	t.Helper()
	c, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Keys: memory.New(), Store: catest.NewStore()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// bundleValidator validates JWT-SVIDs against the CA's bundle, as the agent does.
type bundleValidator struct{ c *ca.CA }

func (v bundleValidator) ValidateJWTSVID(token, audience string) (spiffeid.ID, error) {
	svid, err := jwtsvid.ParseAndValidate(token, v.c.Bundle(), []string{audience})
	if err != nil {
		return spiffeid.ID{}, err
	}
	return svid.ID, nil
}

// serve starts cfg's server on a listener of the given network ("unix" or
// "tcp") and returns a client connected to it.
func serve(t testing.TB, network string, cfg extauthz.Config) authv3.AuthorizationClient {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = discard()
	}
	s, err := extauthz.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var lis net.Listener
	var target string
	switch network {
	case "unix":
		path := filepath.Join(t.TempDir(), "authz.sock")
		lis, err = net.Listen("unix", path)
		target = "unix://" + path
	default:
		lis, err = net.Listen("tcp", "127.0.0.1:0")
		target = lis.Addr().String()
	}
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	s.Register(g)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

// request is the CheckRequest Envoy sends for an HTTP request.
type request struct {
	caller, target string // principals
	method, path   string
	headers        map[string]string
}

func (r request) proto() *authv3.CheckRequest {
	h := map[string]string{":method": r.method, ":path": r.path, ":authority": "payments"}
	for k, v := range r.headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{
			Principal: r.caller,
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: "10.0.0.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 51234}}}},
		},
		Destination: &authv3.AttributeContext_Peer{Principal: r.target},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: r.method, Path: r.path, Host: "payments", Scheme: "https", Protocol: "HTTP/2", Headers: h,
		}},
	}}
}

// result is what a test asserts about a CheckResponse.
type result struct {
	Code       int32             // gRPC code: 0 allow, 7 deny
	HTTPStatus int               // of a denial
	Headers    map[string]string // added upstream (allow) or to the denial
	Remove     []string          // headers removed upstream
	Body       string
}

func summarize(resp *authv3.CheckResponse) result {
	r := result{Code: resp.GetStatus().GetCode(), Headers: map[string]string{}}
	var hs []*corev3.HeaderValueOption
	if ok := resp.GetOkResponse(); ok != nil {
		hs = ok.GetHeaders()
		r.Remove = ok.GetHeadersToRemove()
	}
	if d := resp.GetDeniedResponse(); d != nil {
		hs = d.GetHeaders()
		r.HTTPStatus = int(d.GetStatus().GetCode())
		r.Body = d.GetBody()
	}
	for _, h := range hs {
		r.Headers[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	return r
}

func mustPut(t testing.TB, e *authz.Engine, grants ...authz.Grant) {
	t.Helper()
	for _, g := range grants {
		if err := e.PutGrant(context.Background(), g); err != nil {
			t.Fatal(err)
		}
	}
}
