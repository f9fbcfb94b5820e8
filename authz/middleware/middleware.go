// Package middleware enforces Kith authorization inside an application that
// has no Envoy in front of it: net/http handlers and gRPC servers that
// terminate mTLS with their X.509-SVID ask the local Kith agent, over its
// ext_authz socket, whether the peer may make each request.
//
// The caller is the SPIFFE ID in the peer's certificate; the target is the
// service's own SPIFFE ID. Failures to ask deny the request.
package middleware

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Checker decides whether caller may call target with method and path.
// caller is zero when the request carries no identity. headers are to be
// added to the request when it is allowed. An error means no decision could
// be made; the middleware then denies.
type Checker interface {
	Check(ctx context.Context, caller, target spiffeid.ID, method, path string) (allowed bool, reasons []string, headers map[string]string, err error)
}

type extAuthzChecker struct {
	client authv3.AuthorizationClient
}

// NewExtAuthzChecker returns a Checker that asks a Kith agent's ext_authz
// server (unix:///run/kith/authz.sock or 127.0.0.1:9191) over conn, sending
// the caller and target as the source and destination principals, as Envoy
// does after an mTLS handshake.
func NewExtAuthzChecker(conn grpc.ClientConnInterface) Checker {
	return extAuthzChecker{client: authv3.NewAuthorizationClient(conn)}
}

func (c extAuthzChecker) Check(ctx context.Context, caller, target spiffeid.ID, method, path string) (bool, []string, map[string]string, error) {
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Principal: principal(caller)},
		Destination: &authv3.AttributeContext_Peer{Principal: principal(target)},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method,
			Path:   path,
			Headers: map[string]string{
				":method": method,
				":path":   path,
			},
		}},
	}}
	resp, err := c.client.Check(ctx, req)
	if err != nil {
		return false, nil, nil, fmt.Errorf("ext_authz check %s %s for %s: %w", method, path, target, err)
	}
	if resp.GetStatus().GetCode() == int32(codes.OK) {
		var headers map[string]string
		if hs := resp.GetOkResponse().GetHeaders(); len(hs) > 0 {
			headers = make(map[string]string, len(hs))
			for _, h := range hs {
				headers[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
			}
		}
		return true, nil, headers, nil
	}
	return false, deniedReasons(resp), nil, nil
}

// deniedReasons reads the reasons of a denial from its JSON body, else its
// x-kith-reason header, else its status message.
func deniedReasons(resp *authv3.CheckResponse) []string {
	d := resp.GetDeniedResponse()
	var body struct {
		Reasons []string `json:"reasons"`
	}
	if err := json.Unmarshal([]byte(d.GetBody()), &body); err == nil && len(body.Reasons) > 0 {
		return body.Reasons
	}
	for _, h := range d.GetHeaders() {
		if strings.EqualFold(h.GetHeader().GetKey(), "x-kith-reason") {
			return []string{h.GetHeader().GetValue()}
		}
	}
	if m := resp.GetStatus().GetMessage(); m != "" {
		return []string{m}
	}
	return []string{"denied"}
}

func principal(id spiffeid.ID) string {
	if id.IsZero() {
		return ""
	}
	return id.String()
}

// errNoDecision is the reason given when the checker fails.
const errNoDecision = "authorization check failed"

// HTTP returns a handler that lets a request through to next only when c
// allows the mTLS peer of r (the SPIFFE ID of r.TLS.PeerCertificates[0]) to
// call target with r's method and path (with query). A denied request gets
// 403 with the first reason in the body and in the X-Kith-Reason header. An
// allowed one gets the decision's headers, replacing any X-Kith-* headers
// the client sent.
func HTTP(c Checker, target spiffeid.ID, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var caller spiffeid.ID
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			caller, _ = x509svid.IDFromCert(r.TLS.PeerCertificates[0])
		}
		allowed, reasons, headers, err := c.Check(r.Context(), caller, target, r.Method, r.URL.RequestURI())
		if err != nil {
			reasons = []string{errNoDecision}
			allowed = false
		}
		if !allowed {
			reason := firstReason(reasons)
			w.Header().Set("X-Kith-Reason", oneLine(reason))
			w.Header().Set("X-Kith-Decision", "deny")
			http.Error(w, "forbidden: "+reason, http.StatusForbidden)
			return
		}
		for k := range r.Header {
			if strings.HasPrefix(strings.ToLower(k), "x-kith-") {
				r.Header.Del(k)
			}
		}
		for k, v := range headers {
			r.Header.Set(k, v)
		}
		next.ServeHTTP(w, r)
	})
}

// UnaryServerInterceptor returns an interceptor that calls the handler only
// when c allows the TLS peer to call target with POST and the full method
// name as path; otherwise it fails with PermissionDenied and the first
// reason. The decision's headers are added to the incoming metadata.
func UnaryServerInterceptor(c Checker, target spiffeid.ID) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := authorize(ctx, c, target, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streams.
func StreamServerInterceptor(c Checker, target spiffeid.ID) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := authorize(ss.Context(), c, target, info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &stream{ServerStream: ss, ctx: ctx})
	}
}

type stream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *stream) Context() context.Context { return s.ctx }

func authorize(ctx context.Context, c Checker, target spiffeid.ID, fullMethod string) (context.Context, error) {
	caller, _ := peerID(ctx)
	allowed, reasons, headers, err := c.Check(ctx, caller, target, http.MethodPost, fullMethod)
	if err != nil {
		return nil, status.Error(codes.PermissionDenied, errNoDecision)
	}
	if !allowed {
		return nil, status.Error(codes.PermissionDenied, firstReason(reasons))
	}
	if len(headers) == 0 {
		return ctx, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	md = md.Copy()
	for k := range md {
		if strings.HasPrefix(k, "x-kith-") {
			delete(md, k)
		}
	}
	for k, v := range headers {
		md.Set(k, v)
	}
	return metadata.NewIncomingContext(ctx, md), nil
}

// peerID returns the SPIFFE ID of the TLS peer of ctx.
func peerID(ctx context.Context) (spiffeid.ID, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, errors.New("no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return spiffeid.ID{}, errors.New("peer did not present a certificate")
	}
	return x509svid.IDFromCert(info.State.PeerCertificates[0])
}

func firstReason(reasons []string) string {
	if len(reasons) == 0 {
		return "denied"
	}
	return reasons[0]
}

func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
