package extauthz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/logclip"
)

// Decider decides one request; *authz.Engine is one. An error means no
// decision could be made, and the request is denied.
type Decider interface {
	Decide(ctx context.Context, in authz.Input) (authz.Decision, error)
}

// AttributeNeeder is implemented by a Decider that can tell whether the
// policy in force reads input.attributes. When it reports false the server
// does not build the attributes document, which saves work on every check.
// A Decider without this method always gets the attributes.
type AttributeNeeder interface {
	NeedsAttributes() bool
}

// JWTValidator validates a JWT-SVID for an audience and returns its subject.
// The agent passes one that checks the token against its trust bundles.
type JWTValidator interface {
	ValidateJWTSVID(token string, audience string) (spiffeid.ID, error)
}

// Outcomes passed to Config.OnDecision.
const (
	OutcomeAllow     = "allow"
	OutcomeDeny      = "deny"
	OutcomeAuditDeny = "audit_deny"
	OutcomeError     = "error"
	// OutcomeTimeout: denied because no decision was made within Config.Deadline, either the policy took
	// too long or the request waited too long for an evaluation slot (Config.MaxPerCaller,
	// Config.MaxEvaluations).
	OutcomeTimeout = "timeout"
)

// Response headers.
const (
	HeaderCaller   = "x-kith-caller"
	HeaderDecision = "x-kith-decision"
	HeaderReason   = "x-kith-reason"
	headerPrefix   = "x-kith-"
)

// Config configures a Server.
type Config struct {
	// Decider makes the decisions. Required.
	Decider Decider
	// JWT validates bearer JWT-SVIDs of requests without a source principal.
	// Zero: bearer tokens are not accepted (such requests have no caller).
	JWT JWTValidator
	// Logger receives denials, errors and sampled allows. Zero: slog.Default().
	Logger *slog.Logger
	// OnDecision, if set, is called once per check with the caller's SPIFFE ID
	// ("" when there is none), the target's ("" when there is none) and the
	// outcome: OutcomeAllow, OutcomeDeny, OutcomeAuditDeny or OutcomeError. Both
	// IDs come from the request: bound what is kept per value. It must be fast.
	// Zero: not called.
	OnDecision func(caller, target, outcome string)
	// SampleAllows logs one allowed check in SampleAllows. Zero: allows are
	// not logged. Denials are always logged.
	SampleAllows int
	// Deadline bounds each check: waiting for an evaluation slot and evaluating the policy (cancelled
	// through OPA when it passes). A check that misses it is denied (403, OutcomeTimeout) with the reason.
	// Keep it well under Envoy's ext_authz timeout so that Envoy gets Kith's answer rather than its own.
	// Zero: DefaultDeadline (50 ms).
	Deadline time.Duration
	// MaxEvaluations bounds the evaluations in flight in all. Zero: DefaultMaxEvaluations().
	MaxEvaluations int
	// MaxPerCaller bounds the evaluations in flight for one caller (SPIFFE ID; requests without one share
	// a bound), so that one caller's costly requests cannot take the CPUs from the others: more wait for
	// a slot until their deadline. Zero: DefaultMaxPerCaller().
	MaxPerCaller int
}

// Server implements envoy.service.auth.v3.Authorization.
type Server struct {
	authv3.UnimplementedAuthorizationServer

	decider    Decider
	jwt        JWTValidator
	log        *slog.Logger
	onDecision func(string, string, string)
	sample     uint64
	allows     atomic.Uint64
	deadline   time.Duration
	limit      *limiter
}

// errDeadline is the cause of a check's context when its deadline passes.
var errDeadline = errors.New("ext_authz deadline passed")

var _ authv3.AuthorizationServer = (*Server)(nil)

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Decider == nil {
		return nil, errors.New("new ext_authz server: no decider")
	}
	if cfg.SampleAllows < 0 {
		return nil, fmt.Errorf("new ext_authz server: sample allows is %d, want 0 or more", cfg.SampleAllows)
	}
	if cfg.Deadline < 0 || cfg.MaxEvaluations < 0 || cfg.MaxPerCaller < 0 {
		return nil, fmt.Errorf("new ext_authz server: deadline %s, max evaluations %d, max per caller %d: none may be negative",
			cfg.Deadline, cfg.MaxEvaluations, cfg.MaxPerCaller)
	}
	if cfg.Deadline == 0 {
		cfg.Deadline = DefaultDeadline
	}
	if cfg.MaxEvaluations == 0 {
		cfg.MaxEvaluations = DefaultMaxEvaluations()
	}
	if cfg.MaxPerCaller == 0 {
		cfg.MaxPerCaller = min(DefaultMaxPerCaller(), cfg.MaxEvaluations)
	}
	s := &Server{
		decider:    cfg.Decider,
		jwt:        cfg.JWT,
		log:        cfg.Logger,
		onDecision: cfg.OnDecision,
		sample:     uint64(cfg.SampleAllows),
		deadline:   cfg.Deadline,
		limit:      newLimiter(cfg.MaxEvaluations, cfg.MaxPerCaller),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s, nil
}

// Register registers the Authorization service on g.
func (s *Server) Register(g grpc.ServiceRegistrar) {
	authv3.RegisterAuthorizationServer(g, s)
}

// Check decides one request. It never returns an error: every failure is a
// denial, so that Envoy fails closed whatever its failure_mode_allow says.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	attrs := req.GetAttributes()
	httpReq := attrs.GetRequest().GetHttp()
	method, fullPath := httpReq.GetMethod(), httpReq.GetPath()

	target, err := spiffeid.FromString(attrs.GetDestination().GetPrincipal())
	if err != nil {
		reason := "no target identity"
		if p := attrs.GetDestination().GetPrincipal(); p != "" {
			reason = fmt.Sprintf("no target identity: destination principal %q is not a SPIFFE ID", logclip.Cut(p, 256))
		}
		return s.deny(ctx, "", spiffeid.ID{}, method, fullPath, 403, []string{reason}, OutcomeDeny), nil
	}

	caller, reason, ok := s.caller(attrs, httpReq, target)
	if !ok {
		return s.deny(ctx, target.String(), caller, method, fullPath, 403, []string{reason}, OutcomeDeny), nil
	}

	path, rawQuery, _ := strings.Cut(fullPath, "?")
	// The engine parses the query only for a policy that reads it.
	in := authz.Input{Caller: caller, Target: target, Method: method, Path: path, Query: rawQuery,
		Headers: httpReq.GetHeaders(), Port: attrs.GetDestination().GetAddress().GetSocketAddress().GetPortValue()}
	if n, ok := s.decider.(AttributeNeeder); !ok || n.NeedsAttributes() {
		in.Attributes = Attributes(attrs)
	}

	ctx, cancel := context.WithTimeoutCause(ctx, s.deadline, errDeadline)
	defer cancel()
	release, err := s.limit.acquire(ctx, caller.String())
	if err != nil {
		return s.timeout(ctx, target, caller, method, fullPath, err.Error()), nil
	}
	growStack()
	d, err := s.decider.Decide(ctx, in)
	release()
	if err != nil && errors.Is(context.Cause(ctx), errDeadline) {
		return s.timeout(ctx, target, caller, method, fullPath, "the policy did not decide in time"), nil
	}
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelError, "ext_authz: policy evaluation failed",
			slog.String("caller", logID(caller.String())), slog.String("target", logID(target.String())),
			slog.String("method", logclip.Cut(method, logMaxID)), slog.String("path", logclip.Cut(path, logMaxPath)), slog.Any("error", err))
		return s.deny(ctx, target.String(), caller, method, fullPath, 403, []string{"policy evaluation failed"}, OutcomeError), nil
	}
	if reason != "" {
		d.Reasons = append([]string{reason}, d.Reasons...)
	}
	if !d.Allowed {
		status := d.HTTPStatus
		if status == 0 {
			status = 403
		}
		return s.deny(ctx, target.String(), caller, method, fullPath, status, d.Reasons, OutcomeDeny), nil
	}
	return s.allow(ctx, target, caller, method, fullPath, httpReq, d), nil
}

// timeout denies a request that got no decision within the deadline, saying why.
func (s *Server) timeout(ctx context.Context, target, caller spiffeid.ID, method, path, why string) *authv3.CheckResponse {
	reason := fmt.Sprintf("no decision within the %s ext_authz deadline (authz_deadline): %s", s.deadline, why)
	return s.deny(ctx, target.String(), caller, method, path, 403, []string{reason}, OutcomeTimeout)
}

// caller finds the caller identity: the source principal, else a bearer
// JWT-SVID. A reason is returned with a zero ID when there is no usable
// identity; ok is false when the request must be denied without asking the
// policy (an invalid bearer token).
func (s *Server) caller(attrs *authv3.AttributeContext, h *authv3.AttributeContext_HttpRequest, target spiffeid.ID) (id spiffeid.ID, reason string, ok bool) {
	if p := attrs.GetSource().GetPrincipal(); p != "" {
		id, err := spiffeid.FromString(p)
		if err != nil {
			return spiffeid.ID{}, fmt.Sprintf("source principal %q is not a SPIFFE ID", logclip.Cut(p, 256)), true
		}
		return id, "", true
	}
	auth := header(h, "authorization")
	if auth == "" {
		return spiffeid.ID{}, "", true
	}
	scheme, token, found := strings.Cut(strings.TrimSpace(auth), " ")
	if !found || !strings.EqualFold(scheme, "bearer") {
		return spiffeid.ID{}, "authorization header is not a bearer token", true
	}
	if s.jwt == nil {
		return spiffeid.ID{}, "bearer tokens are not accepted here; call with an X.509-SVID", true
	}
	id, err := s.jwt.ValidateJWTSVID(strings.TrimSpace(token), target.String())
	if err != nil {
		return spiffeid.ID{}, fmt.Sprintf("invalid JWT-SVID for audience %s: %v", target, err), false
	}
	return id, "", true
}

// header returns the value of the request header name (lower case), looked
// up case-insensitively in headers and in header_map.
func header(h *authv3.AttributeContext_HttpRequest, name string) string {
	headers := h.GetHeaders()
	if v, ok := headers[name]; ok {
		return v
	}
	for k, v := range headers {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		if strings.EqualFold(hv.GetKey(), name) {
			if v := hv.GetValue(); v != "" {
				return v
			}
			return string(hv.GetRawValue())
		}
	}
	return ""
}

func (s *Server) allow(ctx context.Context, target, caller spiffeid.ID, method, path string, h *authv3.AttributeContext_HttpRequest, d authz.Decision) *authv3.CheckResponse {
	outcome, decision := OutcomeAllow, "allow"
	if !d.PolicyAllowed {
		outcome, decision = OutcomeAuditDeny, "audit-deny"
	}
	headers := make([]*corev3.HeaderValueOption, 0, len(d.Headers)+3)
	set := make([]string, 0, 8) // names of headers set, lower case; few
	add := func(k, v string) {
		k = strings.ToLower(k)
		if slices.Contains(set, k) || !validHeaderName(k) {
			return
		}
		set = append(set, k)
		headers = append(headers, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: k, Value: sanitize(v, 4096)},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	if !caller.IsZero() {
		add(HeaderCaller, caller.String())
	}
	add(HeaderDecision, decision)
	if outcome == OutcomeAuditDeny && len(d.Reasons) > 0 {
		add(HeaderReason, d.Reasons[0])
	}
	for k, v := range d.Headers {
		add(k, v)
	}
	ok := &authv3.OkHttpResponse{Headers: headers, HeadersToRemove: forged(h, set)}

	if s.onDecision != nil {
		s.onDecision(callerString(caller), target.String(), outcome)
	}
	switch {
	case outcome == OutcomeAuditDeny:
		s.log.LogAttrs(ctx, slog.LevelInfo, "ext_authz: audit mode lets a denied request through",
			slog.String("caller", logID(caller.String())), slog.String("target", logID(target.String())),
			slog.String("method", logclip.Cut(method, logMaxID)), slog.String("path", logclip.Cut(path, logMaxPath)), slog.Any("reasons", logReasons(d.Reasons)))
	case s.sample > 0 && s.allows.Add(1)%s.sample == 1%s.sample:
		s.log.LogAttrs(ctx, slog.LevelInfo, "ext_authz: allow (sampled)",
			slog.String("caller", logID(caller.String())), slog.String("target", logID(target.String())),
			slog.String("method", logclip.Cut(method, logMaxID)), slog.String("path", logclip.Cut(path, logMaxPath)), slog.String("grant", d.Grant))
	}
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
	}
}

// callerString is caller's SPIFFE ID, "" for none.
func callerString(caller spiffeid.ID) string {
	if caller.IsZero() {
		return ""
	}
	return caller.String()
}

// forged lists the x-kith-* request headers that the response does not set:
// they came from the client and must not reach routing or the upstream.
func forged(h *authv3.AttributeContext_HttpRequest, set []string) []string {
	var out []string
	for k := range h.GetHeaders() {
		if len(k) >= len(headerPrefix) && strings.EqualFold(k[:len(headerPrefix)], headerPrefix) && !slices.Contains(set, strings.ToLower(k)) {
			out = append(out, strings.ToLower(k))
		}
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		k := hv.GetKey()
		if len(k) >= len(headerPrefix) && strings.EqualFold(k[:len(headerPrefix)], headerPrefix) && !slices.Contains(set, strings.ToLower(k)) {
			out = append(out, strings.ToLower(k))
		}
	}
	return out
}

type deniedBody struct {
	Allowed bool     `json:"allowed"`
	Reasons []string `json:"reasons"`
}

func (s *Server) deny(ctx context.Context, target string, caller spiffeid.ID, method, path string, status int, reasons []string, outcome string) *authv3.CheckResponse {
	if s.onDecision != nil {
		s.onDecision(callerString(caller), target, outcome)
	}
	if outcome != OutcomeError { // errors are logged with their cause
		s.log.LogAttrs(ctx, slog.LevelInfo, "ext_authz: deny",
			slog.String("caller", logID(caller.String())), slog.String("target", logID(target)),
			slog.String("method", logclip.Cut(method, logMaxID)), slog.String("path", logclip.Cut(path, logMaxPath)), slog.Any("reasons", logReasons(reasons)))
	}
	if status < 400 || status > 599 {
		status = 403
	}
	if reasons == nil {
		reasons = []string{}
	}
	body, err := json.Marshal(deniedBody{Reasons: reasons})
	if err != nil { // cannot happen for strings
		body = []byte(`{"allowed":false,"reasons":[]}`)
	}
	headers := []*corev3.HeaderValueOption{
		{Header: &corev3.HeaderValue{Key: HeaderDecision, Value: "deny"}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD},
		{Header: &corev3.HeaderValue{Key: "content-type", Value: "application/json"}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD},
	}
	if len(reasons) > 0 {
		headers = append(headers, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: HeaderReason, Value: sanitize(reasons[0], 1024)},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied), Message: sanitize(firstOr(reasons, "denied"), 1024)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(status)},
			Headers: headers,
			Body:    string(body),
		}},
	}
}

func firstOr(s []string, def string) string {
	if len(s) == 0 {
		return def
	}
	return s[0]
}

// sanitize makes s a one-line, valid UTF-8 header value of at most max bytes.
func sanitize(s string, max int) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c >= utf8.RuneSelf {
			clean = false
			break
		}
	}
	if clean {
		return logclip.Cut(s, max)
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, s)
	return logclip.Cut(s, max)
}

// Logged request strings are cut to these many bytes: the request comes from any local process.
const (
	logMaxID     = 256  // SPIFFE IDs and methods
	logMaxPath   = 1024 // paths
	logMaxReason = 1024 // each reason, which may quote request data
)

// logID is a SPIFFE ID as logged.
func logID(id string) string { return logclip.Cut(id, logMaxID) }

// logReasons returns reasons with each cut to logMaxReason bytes, copying only when one is longer.
func logReasons(reasons []string) []string {
	for i, r := range reasons {
		if len(r) > logMaxReason {
			out := slices.Clone(reasons)
			for j := i; j < len(out); j++ {
				out[j] = logclip.Cut(out[j], logMaxReason)
			}
			return out
		}
	}
	return reasons
}

// validHeaderName reports whether k is a lower-case HTTP token that is not a
// pseudo-header nor host (Envoy refuses to set those).
func validHeaderName(k string) bool {
	if k == "" || k == "host" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
