package console

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/internal/server/apierr"
)

type userKey struct{}

// fakeWriter records the changes it is asked for, with the user the context names; it refuses grants to
// targets under /locked/.
type fakeWriter struct{ calls []string }

func (f *fakeWriter) Authorize(ctx context.Context, method string, req any) error {
	if g, ok := req.(*adminv1.CreateGrantRequest); ok && strings.Contains(g.GetGrant().GetTarget(), "/locked/") {
		return apierr.Denied("scott may not CreateGrant: scott is not an owner of " + g.GetGrant().GetTarget())
	}
	return nil
}

func (f *fakeWriter) CreateGrant(ctx context.Context, r *adminv1.CreateGrantRequest) (*adminv1.CreateGrantResponse, error) {
	f.calls = append(f.calls, ctx.Value(userKey{}).(spiffeid.ID).String()+" grant "+r.GetGrant().GetCaller()+" → "+r.GetGrant().GetTarget())
	return &adminv1.CreateGrantResponse{Grant: &adminv1.Grant{Id: "g-new"}, Revision: 7}, nil
}

func (f *fakeWriter) RevokeGrants(ctx context.Context, r *adminv1.RevokeGrantsRequest) (*adminv1.RevokeGrantsResponse, error) {
	f.calls = append(f.calls, ctx.Value(userKey{}).(spiffeid.ID).String()+" revoke "+r.GetId())
	return &adminv1.RevokeGrantsResponse{Revision: 8}, nil
}

func (f *fakeWriter) DecideAccessRequest(ctx context.Context, r *adminv1.DecideAccessRequestRequest) (*adminv1.DecideAccessRequestResponse, error) {
	return nil, errors.New("not used")
}

// A one-time link opens a session (once, within a minute); a change needs the session's cookie, its CSRF
// header and the console's own origin, is authorized as the session's user, and a refusal says why.
func TestSignedInChangesNeedTheSessionAndItsCSRFToken(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	sessions := NewSessions(func() time.Time { return now })
	w := &fakeWriter{}
	c, err := New(Config{Admin: &fakeAdmin{}, Feed: &fakeFeed{chans: make(chan chan int64, 4)}, LoopbackOnly: true, Now: func() time.Time { return now },
		Sessions: sessions, Writer: w, AsUser: func(ctx context.Context, u spiffeid.ID) context.Context { return context.WithValue(ctx, userKey{}, u) }})
	if err != nil {
		t.Fatal(err)
	}
	scott := spiffeid.RequireFromString("spiffe://kith.test/user/scott")
	do := func(method, path, body string, hdr map[string]string, cookie *http.Cookie) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, path, strings.NewReader(body))
		r.Host = "127.0.0.1:8080"
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		if cookie != nil {
			r.AddCookie(cookie)
		}
		rec := httptest.NewRecorder()
		c.ServeHTTP(rec, r)
		return rec
	}

	token, _, err := sessions.Issue(scott)
	if err != nil {
		t.Fatal(err)
	}
	login := do("GET", "/ui/login?token="+token, "", nil, nil)
	if login.Code != http.StatusSeeOther || len(login.Result().Cookies()) != 1 {
		t.Fatalf("login = %d, cookies %v", login.Code, login.Result().Cookies())
	}
	cookie := login.Result().Cookies()[0]
	if !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/ui/" {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/ui/", cookie)
	}
	if again := do("GET", "/ui/login?token="+token, "", nil, nil); again.Code != http.StatusForbidden {
		t.Errorf("the same link again = %d, want 403", again.Code)
	}
	late, _, _ := sessions.Issue(scott)
	now = now.Add(LoginLinkTTL + time.Second)
	if r := do("GET", "/ui/login?token="+late, "", nil, nil); r.Code != http.StatusForbidden {
		t.Errorf("a link opened after a minute = %d, want 403", r.Code)
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.AddCookie(cookie)
	_, ss, ok := sessions.of(r)
	if !ok {
		t.Fatal("the session is not found by its cookie")
	}

	grant := `{"caller":"spiffe://kith.test/web","target":"spiffe://kith.test/payments","methods":["GET"],"for":"2h"}`
	json := map[string]string{"Content-Type": "application/json"}
	withCSRF := map[string]string{"Content-Type": "application/json", csrfHeader: ss.csrf}
	crossSite := map[string]string{"Content-Type": "application/json", csrfHeader: ss.csrf, "Sec-Fetch-Site": "cross-site"}
	otherOrigin := map[string]string{"Content-Type": "application/json", csrfHeader: ss.csrf, "Origin": "http://attacker.example"}
	for _, tc := range []struct {
		name   string
		path   string
		body   string
		hdr    map[string]string
		cookie *http.Cookie
		want   int
		says   string
	}{
		{"no session", "/ui/api/grants", grant, withCSRF, nil, 401, "not signed in"},
		{"no CSRF header", "/ui/api/grants", grant, json, cookie, 403, csrfHeader},
		{"a wrong CSRF header", "/ui/api/grants", grant, map[string]string{"Content-Type": "application/json", csrfHeader: "x"}, cookie, 403, csrfHeader},
		{"from another site", "/ui/api/grants", grant, crossSite, cookie, 403, "another site"},
		{"from another origin", "/ui/api/grants", grant, otherOrigin, cookie, 403, "another site"},
		{"not JSON", "/ui/api/grants", grant, map[string]string{csrfHeader: ss.csrf}, cookie, 415, "application/json"},
		{"an unknown field", "/ui/api/grants", `{"caller":"spiffe://kith.test/web","target":"spiffe://kith.test/payments","admin":true}`, withCSRF, cookie, 400, "unknown field"},
		{"a bad duration", "/ui/api/grants", `{"caller":"spiffe://kith.test/web","target":"spiffe://kith.test/payments","for":"soon"}`, withCSRF, cookie, 400, "want a duration"},
		{"a short name", "/ui/api/grants", `{"caller":"web","target":"spiffe://kith.test/payments"}`, withCSRF, cookie, 400, "want a SPIFFE ID"},
		{"refused by policy", "/ui/api/grants", `{"caller":"spiffe://kith.test/web","target":"spiffe://kith.test/locked/x"}`, withCSRF, cookie, 403, "not an owner"},
		{"granted", "/ui/api/grants", grant, withCSRF, cookie, 200, "g-new"},
		{"revoked", "/ui/api/revoke", `{"id":"g-new"}`, withCSRF, cookie, 200, `"revision":"8"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := do("POST", tc.path, tc.body, tc.hdr, tc.cookie)
			if got.Code != tc.want || !strings.Contains(got.Body.String(), tc.says) {
				t.Errorf("POST %s = %d %s, want %d saying %q", tc.path, got.Code, got.Body.String(), tc.want, tc.says)
			}
		})
	}
	want := []string{scott.String() + " grant spiffe://kith.test/web → spiffe://kith.test/payments", scott.String() + " revoke g-new"}
	if diff := cmp.Diff(want, w.calls); diff != "" {
		t.Errorf("changes made (-want +got):\n%s", diff)
	}
	if out := do("POST", "/ui/api/logout", "", map[string]string{csrfHeader: ss.csrf}, cookie); out.Code != http.StatusNoContent {
		t.Errorf("logout = %d", out.Code)
	}
	if got := do("POST", "/ui/api/grants", grant, withCSRF, cookie); got.Code != http.StatusUnauthorized {
		t.Errorf("a change after logout = %d, want 401", got.Code)
	}
}
