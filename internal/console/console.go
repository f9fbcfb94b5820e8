// Package console serves Kith's web console under /ui/ on the server's HTTP listener: hand-written HTML,
// CSS and JavaScript modules embedded in the binary, read-only JSON endpoints under /ui/api/ answered by
// the admin API in process, and server-sent events fed by the store's change feed so that open pages
// follow every change. The console only reads: its Admin interface has no method that changes anything.
package console

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

//go:embed assets
var assets embed.FS

// Admin is the part of the admin API the console reads. It lists no method that changes anything, so the
// console cannot: changes wait for user logins (they will carry the user's identity and CSRF protection).
type Admin interface {
	ListEntries(context.Context, *adminv1.ListEntriesRequest) (*adminv1.ListEntriesResponse, error)
	ListGrants(context.Context, *adminv1.ListGrantsRequest) (*adminv1.ListGrantsResponse, error)
	ListTargetModes(context.Context, *adminv1.ListTargetModesRequest) (*adminv1.ListTargetModesResponse, error)
	ListAgents(context.Context, *adminv1.ListAgentsRequest) (*adminv1.ListAgentsResponse, error)
	ListAuthorities(context.Context, *adminv1.ListAuthoritiesRequest) (*adminv1.ListAuthoritiesResponse, error)
	ListAuditEvents(context.Context, *adminv1.ListAuditEventsRequest) (*adminv1.ListAuditEventsResponse, error)
	VerifyAudit(context.Context, *adminv1.VerifyAuditRequest) (*adminv1.VerifyAuditResponse, error)
	GetPolicyStatus(context.Context, *adminv1.GetPolicyStatusRequest) (*adminv1.GetPolicyStatusResponse, error)
	ListPolicyHistory(context.Context, *adminv1.ListPolicyHistoryRequest) (*adminv1.ListPolicyHistoryResponse, error)
	Can(context.Context, *adminv1.CanRequest) (*adminv1.CanResponse, error)
	GetServerInfo(context.Context, *adminv1.GetServerInfoRequest) (*adminv1.GetServerInfoResponse, error)
	GetIdentityActivity(context.Context, *adminv1.GetIdentityActivityRequest) (*adminv1.GetIdentityActivityResponse, error)
}

// Feed signals committed store revisions (store.Feed's Watch): one value held, coalescing.
type Feed interface {
	Watch() (<-chan int64, func())
}

// Config builds a Console.
type Config struct {
	Admin Admin // required
	Feed  Feed  // required
	// LoopbackOnly refuses requests whose Host header is not a loopback address or localhost, so that a web
	// page elsewhere cannot read the console through DNS rebinding. Set when the listener is loopback.
	LoopbackOnly bool
	Logger       *slog.Logger     // zero: discard
	Now          func() time.Time // zero: time.Now
	// Heartbeat is how often an idle event stream gets a comment line, so that proxies keep it open.
	// Zero: 30s.
	Heartbeat time.Duration
	// Sessions, Writer and AsUser let a user who signed in (kith console) grant, revoke and decide access
	// requests, each change authorized by the kith.admin policy as that user and protected against
	// cross-site requests. AsUser returns a context in which the admin API sees user as its caller. All
	// three or none (read-only).
	Sessions *Sessions
	Writer   Writer
	AsUser   func(ctx context.Context, user spiffeid.ID) context.Context
}

// Console is the /ui/ handler.
type Console struct {
	cfg Config
	mux *http.ServeMux
}

var _ http.Handler = (*Console)(nil)

// Prefix is where the console is served.
const Prefix = "/ui/"

// New validates cfg.
func New(cfg Config) (*Console, error) {
	if cfg.Admin == nil || cfg.Feed == nil {
		return nil, errors.New("console: admin and feed are required")
	}
	if (cfg.Sessions == nil) != (cfg.Writer == nil) || (cfg.Writer == nil) != (cfg.AsUser == nil) {
		return nil, errors.New("console: sessions, writer and as-user go together")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 30 * time.Second
	}
	c := &Console{cfg: cfg, mux: http.NewServeMux()}
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, err
	}
	files := http.StripPrefix("/ui/", http.FileServerFS(static))
	c.mux.Handle("GET /ui/", files)
	c.mux.HandleFunc("GET /ui/api/graph", c.apiJSON(c.graph))
	c.mux.HandleFunc("GET /ui/api/grant", c.apiJSON(c.grantDetail))
	c.mux.HandleFunc("GET /ui/api/identity", c.apiJSON(c.identity))
	c.mux.HandleFunc("GET /ui/api/can", c.apiJSON(c.can))
	c.mux.HandleFunc("GET /ui/api/agents", c.apiJSON(c.agents))
	c.mux.HandleFunc("GET /ui/api/ca", c.apiJSON(c.authorities))
	c.mux.HandleFunc("GET /ui/api/policy", c.apiJSON(c.policy))
	c.mux.HandleFunc("GET /ui/api/audit", c.apiJSON(c.audit))
	c.mux.HandleFunc("GET /ui/api/info", c.apiJSON(c.info))
	c.mux.HandleFunc("GET /ui/api/events", c.events)
	if cfg.Sessions != nil {
		c.mux.HandleFunc("GET /ui/login", c.login)
		c.mux.HandleFunc("POST /ui/api/logout", c.logout)
		c.mux.HandleFunc("POST /ui/api/grants", c.change(c.createGrant))
		c.mux.HandleFunc("POST /ui/api/revoke", c.change(c.revokeGrant))
		c.mux.HandleFunc("POST /ui/api/requests/decide", c.change(c.decideRequest))
	}
	return c, nil
}

// ServeHTTP serves the console with headers that keep it to its own origin: no script, style, image or
// connection from anywhere else, no framing.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if c.cfg.LoopbackOnly && !loopbackHost(r.Host) {
		http.Error(w, "the console answers only requests to a loopback address or localhost (ui.enabled: true serves it on other addresses)", http.StatusForbidden)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead && (r.Method != http.MethodPost || c.cfg.Sessions == nil) {
		http.Error(w, "the console is read-only: changes need a signed-in user (kith console)", http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	c.mux.ServeHTTP(w, r)
}

// loopbackHost reports whether a Host header names localhost or a loopback IP.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// badRequest is a request the console refuses, with what to do.
type badRequest string

func (b badRequest) Error() string { return string(b) }

func (c *Console) apiJSON(f func(ctx context.Context, r *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := f(r.Context(), r)
		w.Header().Set("Cache-Control", "no-store")
		if err != nil {
			code := http.StatusInternalServerError
			var br badRequest
			if errors.As(err, &br) {
				code = http.StatusBadRequest
			} else if st, ok := status.FromError(err); ok {
				switch st.Code() {
				case codes.InvalidArgument:
					code = http.StatusBadRequest
				case codes.NotFound:
					code = http.StatusNotFound
				case codes.FailedPrecondition:
					code = http.StatusConflict
				}
				err = errors.New(st.Message())
			}
			if code == http.StatusInternalServerError {
				c.cfg.Logger.Error("console api", "path", r.URL.Path, "error", err)
			}
			writeJSON(w, code, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

// writeJSON answers v as JSON, not to be cached.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// pb is a proto message that JSON-encodes as the CLI's -o json does (proto field names).
type pb struct{ proto.Message }

func (p pb) MarshalJSON() ([]byte, error) {
	return protojson.MarshalOptions{UseProtoNames: true}.Marshal(p.Message)
}

func pbs[T proto.Message](ms []T) []pb {
	out := make([]pb, len(ms))
	for i, m := range ms {
		out[i] = pb{m}
	}
	return out
}

// events streams "change" events, one per committed store revision (coalesced), until the client goes.
func (c *Console) events(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	revs, stop := c.cfg.Feed.Watch()
	defer stop()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprint(w, "retry: 1000\n\n")
	fl.Flush()
	beat := time.NewTicker(c.cfg.Heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case rev, ok := <-revs:
			if !ok {
				return
			}
			if _, err := fmt.Fprintf(w, "event: change\ndata: {\"revision\":%d}\n\n", rev); err != nil {
				return
			}
			fl.Flush()
		case <-beat.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			fl.Flush()
		}
	}
}
