// Package oidclogin verifies the ID tokens users log in with (kith login --server, OpenID Connect) and maps
// their claims to a Kith user: the name from preferred_username or email, labels and roles from groups, as
// configured (users.oidc). go-oidc is the relying party; the flows themselves run in the CLI.
package oidclogin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/internal/config"
	"github.com/kithid/kith/internal/server/adminapi"
	"github.com/kithid/kith/internal/store"
)

// Login verifies ID tokens of one provider. The provider's discovery document is fetched on first use
// (and again after a failure), so that the server starts while the provider is down.
type Login struct {
	cfg config.OIDC
	now func() time.Time

	mu       sync.Mutex
	provider *oidc.Provider
	verifier *oidc.IDTokenVerifier
}

// New returns a Login for cfg (already validated by config.Server.Finish). now is the clock tokens expire
// by; zero: time.Now.
func New(cfg config.OIDC, now func() time.Time) (*Login, error) {
	if cfg.Issuer == "" || cfg.ClientID == "" {
		return nil, errors.New("oidc login: issuer and client id are required")
	}
	if now == nil {
		now = time.Now
	}
	return &Login{cfg: cfg, now: now}, nil
}

func (l *Login) getVerifier(ctx context.Context) (*oidc.Provider, *oidc.IDTokenVerifier, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.verifier != nil {
		return l.provider, l.verifier, nil
	}
	p, err := oidc.NewProvider(oidc.ClientContext(context.WithoutCancel(ctx), nil), l.cfg.Issuer)
	if err != nil {
		return nil, nil, fmt.Errorf("discover the OpenID provider %s (users.oidc.issuer): %w", l.cfg.Issuer, err)
	}
	// The audience is checked below: either client may have asked for the token.
	l.provider, l.verifier = p, p.Verifier(&oidc.Config{SkipClientIDCheck: true, Now: l.now})
	return l.provider, l.verifier, nil
}

// claims are the ID token claims Kith reads.
type claims struct {
	PreferredUsername string `json:"preferred_username"`
	Email             string `json:"email"`
	EmailVerified     *bool  `json:"email_verified"`
}

// Verify checks the ID token and returns the user it names; with accessToken, the claims of the provider's
// userinfo for the same subject complete those of the ID token.
func (l *Login) Verify(ctx context.Context, raw, accessToken string) (store.User, error) {
	p, v, err := l.getVerifier(ctx)
	if err != nil {
		return store.User{}, err
	}
	tok, err := v.Verify(ctx, raw)
	if err != nil {
		return store.User{}, err
	}
	if !slices.Contains(tok.Audience, l.cfg.ClientID) && !slices.Contains(tok.Audience, l.cfg.DeviceClientID) {
		return store.User{}, fmt.Errorf("the token's audience %v is not this server's client %s", tok.Audience, l.cfg.ClientID)
	}
	var c claims
	if err := tok.Claims(&c); err != nil {
		return store.User{}, fmt.Errorf("read claims: %w", err)
	}
	all := map[string]any{}
	if err := tok.Claims(&all); err != nil {
		return store.User{}, fmt.Errorf("read claims: %w", err)
	}
	if accessToken != "" {
		ui, err := p.UserInfo(oidc.ClientContext(ctx, nil), oauth2.StaticTokenSource(&oauth2.Token{AccessToken: accessToken, TokenType: "Bearer"}))
		if err != nil {
			return store.User{}, fmt.Errorf("read userinfo: %w", err)
		}
		if ui.Subject != tok.Subject {
			return store.User{}, fmt.Errorf("userinfo is about subject %q, the ID token about %q", ui.Subject, tok.Subject)
		}
		var uc claims
		extra := map[string]any{}
		if err := ui.Claims(&uc); err != nil {
			return store.User{}, fmt.Errorf("read userinfo claims: %w", err)
		}
		if err := ui.Claims(&extra); err != nil {
			return store.User{}, fmt.Errorf("read userinfo claims: %w", err)
		}
		if c.PreferredUsername == "" {
			c.PreferredUsername = uc.PreferredUsername
		}
		if c.Email == "" {
			c.Email, c.EmailVerified = uc.Email, uc.EmailVerified
		}
		if _, ok := all[l.cfg.GroupsClaim]; !ok {
			all[l.cfg.GroupsClaim] = extra[l.cfg.GroupsClaim]
		}
	}
	return l.Map(c.PreferredUsername, c.Email, c.EmailVerified, groupsOf(all[l.cfg.GroupsClaim]))
}

func groupsOf(v any) []string {
	var out []string
	switch g := v.(type) {
	case []any:
		for _, x := range g {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
	case string:
		out = strings.Fields(g)
	}
	return out
}

// Map turns claims into a user: its name (from preferred_username, or the local part of a verified
// email), labels (email_label, group_labels) and roles (group_roles).
func (l *Login) Map(username, email string, emailVerified *bool, groups []string) (store.User, error) {
	name := strings.ToLower(username)
	if l.cfg.UsernameClaim == "email" {
		if email == "" || (emailVerified != nil && !*emailVerified) {
			return store.User{}, errors.New("the token has no verified email, which names users here (users.oidc.username_claim)")
		}
		name, _, _ = strings.Cut(strings.ToLower(email), "@")
	}
	if name == "" {
		return store.User{}, fmt.Errorf("the token has no %s claim, which names users here (users.oidc.username_claim)", l.cfg.UsernameClaim)
	}
	if err := adminapi.ValidateUserName(name); err != nil {
		return store.User{}, fmt.Errorf("the token names user %q: %w", name, err)
	}
	u := store.User{Name: name, Labels: map[string]string{}}
	if l.cfg.EmailLabel != "" && email != "" {
		u.Labels[l.cfg.EmailLabel] = email
	}
	for _, g := range groups {
		if lv, ok := l.cfg.GroupLabels[g]; ok {
			k, v, _ := strings.Cut(lv, "=")
			u.Labels[k] = v
		}
		if r, ok := l.cfg.GroupRoles[g]; ok && !slices.Contains(u.Roles, r) {
			u.Roles = append(u.Roles, r)
		}
	}
	slices.Sort(u.Roles)
	if len(u.Labels) == 0 {
		u.Labels = nil
	}
	return u, nil
}

// Settings is what the CLI needs to run the flows.
func (l *Login) Settings() *adminv1.GetLoginConfigResponse {
	return &adminv1.GetLoginConfigResponse{OidcIssuer: l.cfg.Issuer, OidcClientId: l.cfg.ClientID,
		OidcDeviceClientId: l.cfg.DeviceClientID, OidcDeviceClientSecret: l.cfg.DeviceClientSecret, OidcScopes: slices.Clone(l.cfg.Scopes)}
}

var _ adminapi.OIDCLogin = (*Login)(nil)
