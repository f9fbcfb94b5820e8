package console

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/internal/server/apierr"
)

// Writer is the part of the admin API a signed-in user changes things with. Each change is authorized
// first (Authorize: the kith.admin policy, as for the user's calls over mTLS) with a context that AsUser
// made for the session's user, so the audit log names the user.
type Writer interface {
	Authorize(ctx context.Context, method string, req any) error
	CreateGrant(context.Context, *adminv1.CreateGrantRequest) (*adminv1.CreateGrantResponse, error)
	RevokeGrants(context.Context, *adminv1.RevokeGrantsRequest) (*adminv1.RevokeGrantsResponse, error)
	DecideAccessRequest(context.Context, *adminv1.DecideAccessRequestRequest) (*adminv1.DecideAccessRequestResponse, error)
}

// maxBody bounds a change's JSON body.
const maxBody = 64 << 10

// login opens a session from a one-time link (kith console) and sends the browser to the console.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	id, ss, err := c.cfg.Sessions.open(r.URL.Query().Get("token"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: id, Path: Prefix, HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, Expires: ss.expires})
	c.cfg.Logger.Info("console: signed in", "user", ss.user.String())
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}

// change wraps a handler of a change: a live session, its CSRF token, a JSON body, and the user's context.
func (c *Console) change(f func(ctx context.Context, body json.RawMessage) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		fail := func(code int, msg string) { writeJSON(w, code, map[string]string{"error": msg}) }
		if c.cfg.Writer == nil || c.cfg.Sessions == nil {
			fail(http.StatusMethodNotAllowed, "this console is read-only")
			return
		}
		_, ss, ok := c.cfg.Sessions.of(r)
		if !ok {
			fail(http.StatusUnauthorized, "not signed in: run kith console (after kith login) and open the link it prints")
			return
		}
		if !csrfOK(r, ss) {
			fail(http.StatusForbidden, "missing or wrong "+csrfHeader+" header, or a request from another site")
			return
		}
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			fail(http.StatusUnsupportedMediaType, "send application/json")
			return
		}
		var body json.RawMessage
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(&body); err != nil {
			fail(http.StatusBadRequest, "request body: "+err.Error())
			return
		}
		v, err := f(c.cfg.AsUser(r.Context(), ss.user), body)
		if err != nil {
			code := http.StatusInternalServerError
			switch apierr.Code(err) {
			case codes.InvalidArgument:
				code = http.StatusBadRequest
			case codes.PermissionDenied:
				code = http.StatusForbidden
			case codes.NotFound:
				code = http.StatusNotFound
			case codes.FailedPrecondition, codes.AlreadyExists:
				code = http.StatusConflict
			}
			if code == http.StatusInternalServerError {
				c.cfg.Logger.Error("console change", "path", r.URL.Path, "user", ss.user.String(), "error", err)
			}
			fail(code, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

func decode(body json.RawMessage, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return apierr.Invalid(fmt.Sprintf("request body: %v", err))
	}
	return nil
}

// grantForm is what the console's grant form sends.
type grantForm struct {
	Caller  string   `json:"caller"`
	Target  string   `json:"target"`
	Methods []string `json:"methods"`
	Paths   []string `json:"paths"`
	For     string   `json:"for"` // a Go duration ("2h"); "" for no expiry
	Reason  string   `json:"reason"`
}

func (c *Console) createGrant(ctx context.Context, body json.RawMessage) (any, error) {
	var f grantForm
	if err := decode(body, &f); err != nil {
		return nil, err
	}
	g := &adminv1.Grant{Caller: strings.TrimSpace(f.Caller), Target: strings.TrimSpace(f.Target), Methods: f.Methods, Paths: f.Paths, Reason: f.Reason}
	if f.For != "" {
		d, err := time.ParseDuration(f.For)
		if err != nil || d <= 0 {
			return nil, apierr.Invalid(fmt.Sprintf("for %q: want a duration such as 30m or 8h", f.For))
		}
		g.ExpiresAt = timestamppb.New(c.cfg.Now().Add(d))
	}
	for _, p := range []struct{ field, v string }{{"caller", g.Caller}, {"target", g.Target}} {
		if _, err := spiffeid.FromString(strings.TrimSuffix(p.v, "/*")); err != nil {
			return nil, apierr.Invalid(fmt.Sprintf("%s %q: want a SPIFFE ID (spiffe://trust-domain/path, or a prefix ending in /*)", p.field, p.v))
		}
	}
	return act(ctx, c.cfg.Writer, "CreateGrant", &adminv1.CreateGrantRequest{Grant: g}, c.cfg.Writer.CreateGrant)
}

// act authorizes a change as the context's user, then makes it.
func act[Q any, R proto.Message](ctx context.Context, w Writer, method string, req Q, call func(context.Context, Q) (R, error)) (any, error) {
	if err := w.Authorize(ctx, method, req); err != nil {
		return nil, err
	}
	resp, err := call(ctx, req)
	if err != nil {
		return nil, err
	}
	return pb{resp}, nil
}

func (c *Console) revokeGrant(ctx context.Context, body json.RawMessage) (any, error) {
	var f struct {
		ID string `json:"id"`
	}
	if err := decode(body, &f); err != nil {
		return nil, err
	}
	if f.ID == "" {
		return nil, apierr.Invalid("id: the grant to revoke is required")
	}
	return act(ctx, c.cfg.Writer, "RevokeGrants", &adminv1.RevokeGrantsRequest{Id: f.ID}, c.cfg.Writer.RevokeGrants)
}

func (c *Console) decideRequest(ctx context.Context, body json.RawMessage) (any, error) {
	var f struct {
		ID      string `json:"id"`
		Approve bool   `json:"approve"`
		Reason  string `json:"reason"`
	}
	if err := decode(body, &f); err != nil {
		return nil, err
	}
	if f.ID == "" {
		return nil, apierr.Invalid("id: the access request is required")
	}
	return act(ctx, c.cfg.Writer, "DecideAccessRequest", &adminv1.DecideAccessRequestRequest{Id: f.ID, Approve: f.Approve, Reason: f.Reason},
		c.cfg.Writer.DecideAccessRequest)
}

// logout ends the session.
func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if id, ss, ok := c.cfg.Sessions.of(r); ok {
		if !csrfOK(r, ss) {
			http.Error(w, "missing or wrong "+csrfHeader+" header", http.StatusForbidden)
			return
		}
		c.cfg.Sessions.close(id)
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: Prefix, MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}
