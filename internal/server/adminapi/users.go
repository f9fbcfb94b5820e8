package adminapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/internal/server/apierr"
	"github.com/kithid/kith/internal/store"
	"github.com/kithid/kith/logclip"
)

// UserStore persists users, enrolment codes and logins.
type UserStore interface {
	CreateUser(ctx context.Context, actor string, u store.User) (store.User, error)
	UpdateUser(ctx context.Context, actor, action string, u store.User) (store.User, error)
	GetUser(ctx context.Context, name string) (store.User, error)
	ListUsers(ctx context.Context) ([]store.User, error)
	CreateEnrolmentCode(ctx context.Context, actor string, c store.EnrolmentCode) (store.EnrolmentCode, error)
	UseEnrolmentCode(ctx context.Context, userPrefix string, hash []byte, now time.Time, l store.Login) (store.EnrolmentCode, store.Login, error)
	CreateLogin(ctx context.Context, actor string, l store.Login) (store.Login, error)
	GetLogin(ctx context.Context, id string) (store.Login, error)
	RenewLogin(ctx context.Context, id, oldSerial, newSerial string, now time.Time) (store.Login, error)
}

// OIDCLogin verifies ID tokens of the configured OpenID provider and maps their claims to a user.
type OIDCLogin interface {
	// Verify checks rawIDToken (issuer, audience, signature, expiry) and returns the user its claims name,
	// with the labels and roles they map to.
	// accessToken, when given, reads the provider's userinfo for the claims the ID token lacks.
	Verify(ctx context.Context, rawIDToken, accessToken string) (store.User, error)
	// Settings is what the CLI needs to run the flows.
	Settings() *adminv1.GetLoginConfigResponse
}

// Logins configures how users log in. Zero fields take the defaults named.
type Logins struct {
	Users UserStore // zero: the user verbs fail
	// SVIDTTL is the lifetime of a user's X.509-SVID; zero: 8 h.
	SVIDTTL time.Duration
	// LoginTTL is how long a login may renew its SVID; zero: 7 days.
	LoginTTL time.Duration
	// CodeTTL is the default lifetime of an enrolment code; zero: 24 h.
	CodeTTL time.Duration
	// URL is where users log in (https://host:port of admin.listen), printed by kith user add.
	URL string
	// OIDC, when set, lets users log in with an ID token of the OpenID provider.
	OIDC OIDCLogin
}

// UserPath is the path prefix of users' SPIFFE IDs: spiffe://TD/user/<name>.
const UserPath = "/user/"

var userName = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$`)

// ValidateUserName checks a user name: lowercase letters, digits, '.', '_', '-', at most 64.
func ValidateUserName(name string) error {
	if !userName.MatchString(name) {
		return apierr.Invalid(fmt.Sprintf("user name %q is invalid: use lowercase letters, digits, '.', '_' and '-' (at most 64), starting and ending with a letter or digit", logclip.Cut(name, 80)))
	}
	return nil
}

// UserID is the SPIFFE ID of the user name in td.
func UserID(td spiffeid.TrustDomain, name string) spiffeid.ID {
	id, _ := spiffeid.FromSegments(td, "user", name)
	return id
}

// UserOf returns the user name of id, if id is a user's identity in td.
func UserOf(td spiffeid.TrustDomain, id spiffeid.ID) (string, bool) {
	if id.TrustDomain() != td {
		return "", false
	}
	name, ok := strings.CutPrefix(id.Path(), UserPath)
	if !ok || ValidateUserName(name) != nil {
		return "", false
	}
	return name, true
}

// PeerSVID returns the X.509-SVID leaf a caller presented on the admin TCP listener, if any. That listener
// verifies the chain against the trust bundle during the handshake (server.agentTLSConfig); the unix
// socket has no certificates.
func PeerSVID(ctx context.Context) (*x509.Certificate, spiffeid.ID, bool) {
	if id, ok := ctx.Value(consoleUserKey{}).(spiffeid.ID); ok {
		return nil, id, true
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, spiffeid.ID{}, false
	}
	tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(tlsInfo.State.PeerCertificates) == 0 {
		return nil, spiffeid.ID{}, false
	}
	leaf := tlsInfo.State.PeerCertificates[0]
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return nil, spiffeid.ID{}, false
	}
	return leaf, id, true
}

type consoleUserKey struct{}

// WithUser returns a context in which the caller is user (a user's SPIFFE ID), as if the user had called
// over mTLS with their SVID: for the web console, which signed the user in itself (kith console). Only code
// in this process can set it; calls still go through Authorize.
func WithUser(ctx context.Context, user spiffeid.ID) context.Context {
	return context.WithValue(ctx, consoleUserKey{}, user)
}

func (s *Service) users() (UserStore, error) {
	if s.cfg.Logins.Users == nil {
		return nil, apierr.Invalid("users are not available on this server")
	}
	return s.cfg.Logins.Users, nil
}

func (s *Service) userProto(u store.User) *adminv1.User {
	return &adminv1.User{Name: u.Name, SpiffeId: UserID(s.cfg.TrustDomain, u.Name).String(), Labels: u.Labels, Roles: u.Roles,
		Disabled: u.Disabled, Source: u.Source, CreatedAt: ts(u.CreatedAt), UpdatedAt: ts(u.UpdatedAt)}
}

var roleName = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,30}[a-z0-9])?$`)

func validateRoles(roles []string) error {
	if len(roles) > MaxLabels {
		return apierr.Invalid(fmt.Sprintf("%d roles: at most %d", len(roles), MaxLabels))
	}
	for _, r := range roles {
		if !roleName.MatchString(r) {
			return apierr.Invalid(fmt.Sprintf("role %q is invalid: use lowercase letters, digits, '.', '_' and '-' (at most 32)", logclip.Cut(r, 80)))
		}
	}
	return nil
}

// CreateUser adds a user and, unless asked not to, makes its first enrolment code.
func (s *Service) CreateUser(ctx context.Context, req *adminv1.CreateUserRequest) (*adminv1.CreateUserResponse, error) {
	us, err := s.users()
	if err != nil {
		return nil, err
	}
	pu := req.GetUser()
	if err := ValidateUserName(pu.GetName()); err != nil {
		return nil, err
	}
	if len(pu.GetLabels()) > MaxLabels {
		return nil, apierr.Invalid(fmt.Sprintf("%d labels: at most %d", len(pu.GetLabels()), MaxLabels))
	}
	if err := validateLabels(pu.GetLabels()); err != nil {
		return nil, err
	}
	if err := validateRoles(pu.GetRoles()); err != nil {
		return nil, err
	}
	roles := slices.Compact(slices.Sorted(slices.Values(pu.GetRoles())))
	u, err := us.CreateUser(ctx, s.cfg.Actor(ctx), store.User{Name: pu.GetName(), Labels: pu.GetLabels(), Roles: roles, Disabled: pu.GetDisabled()})
	if err != nil {
		return nil, err
	}
	resp := &adminv1.CreateUserResponse{User: s.userProto(u), LoginUrl: s.cfg.Logins.URL, CaFingerprint: s.caFingerprint()}
	if !req.GetNoCode() {
		code, exp, err := s.newCode(ctx, u.Name, req.GetCodeTtlSeconds())
		if err != nil {
			return nil, err
		}
		resp.EnrolmentCode, resp.CodeExpiresAt = code, timestamppb.New(exp)
	}
	return resp, nil
}

// caFingerprint is sha256:<hex> of the newest root of the bundle.
func (s *Service) caFingerprint() string {
	roots := s.cfg.CA.Bundle().X509Authorities()
	if len(roots) == 0 {
		return ""
	}
	newest := roots[0]
	for _, r := range roots[1:] {
		if r.NotBefore.After(newest.NotBefore) {
			newest = r
		}
	}
	sum := sha256.Sum256(newest.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Enrolment codes read ABCD-EFGH: 8 letters from an alphabet without look-alikes (40 bits).
const codeAlphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"

func newEnrolmentCode() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	out := make([]byte, 0, 9)
	for i, c := range b {
		if i == 4 {
			out = append(out, '-')
		}
		out = append(out, codeAlphabet[int(c)%len(codeAlphabet)])
	}
	return string(out), nil
}

// normaliseCode accepts a code typed in lower case or without its dash.
func normaliseCode(c string) string {
	c = strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(c), "-", ""))
	if len(c) == 8 {
		c = c[:4] + "-" + c[4:]
	}
	return c
}

func codeHash(code string) []byte {
	h := sha256.Sum256([]byte("kith enrolment code\n" + normaliseCode(code)))
	return h[:]
}

func (s *Service) newCode(ctx context.Context, user string, ttlSeconds int64) (string, time.Time, error) {
	ttl := s.cfg.Logins.CodeTTL
	if ttl == 0 {
		ttl = 24 * time.Hour
	}
	if ttlSeconds < 0 || ttlSeconds > int64(30*24*time.Hour/time.Second) {
		return "", time.Time{}, apierr.Invalid("code ttl must be between 1 second and 30 days")
	}
	if ttlSeconds > 0 {
		ttl = time.Duration(ttlSeconds) * time.Second
	}
	code, err := newEnrolmentCode()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("new enrolment code: %w", err)
	}
	exp := s.cfg.Now().Add(ttl)
	if _, err := s.cfg.Logins.Users.CreateEnrolmentCode(ctx, s.cfg.Actor(ctx), store.EnrolmentCode{User: user, Hash: codeHash(code), ExpiresAt: exp}); err != nil {
		return "", time.Time{}, err
	}
	return code, exp, nil
}

// CreateEnrolmentCode makes another one-time code for an existing user.
func (s *Service) CreateEnrolmentCode(ctx context.Context, req *adminv1.CreateEnrolmentCodeRequest) (*adminv1.CreateEnrolmentCodeResponse, error) {
	if _, err := s.users(); err != nil {
		return nil, err
	}
	if err := ValidateUserName(req.GetName()); err != nil {
		return nil, err
	}
	code, exp, err := s.newCode(ctx, req.GetName(), req.GetTtlSeconds())
	if err != nil {
		return nil, err
	}
	return &adminv1.CreateEnrolmentCodeResponse{EnrolmentCode: code, ExpiresAt: timestamppb.New(exp)}, nil
}

// GetUser returns one user.
func (s *Service) GetUser(ctx context.Context, req *adminv1.GetUserRequest) (*adminv1.GetUserResponse, error) {
	us, err := s.users()
	if err != nil {
		return nil, err
	}
	u, err := us.GetUser(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &adminv1.GetUserResponse{User: s.userProto(u)}, nil
}

// ListUsers lists users by name, a page at a time.
func (s *Service) ListUsers(ctx context.Context, req *adminv1.ListUsersRequest) (*adminv1.ListUsersResponse, error) {
	us, err := s.users()
	if err != nil {
		return nil, err
	}
	pg, err := newPager("ListUsers", "", req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	all, err := us.ListUsers(ctx)
	if err != nil {
		return nil, err
	}
	resp := &adminv1.ListUsersResponse{}
	resp.Users, resp.NextPageToken = pageIn(pg, all, func(_ int, u store.User) []string { return []string{u.Name} }, s.userProto)
	return resp, nil
}

// SetUserDisabled disables or enables a user. Disabling takes effect at once: no renewal, no admin call,
// and agents deny the user's calls once they have the change.
func (s *Service) SetUserDisabled(ctx context.Context, req *adminv1.SetUserDisabledRequest) (*adminv1.SetUserDisabledResponse, error) {
	us, err := s.users()
	if err != nil {
		return nil, err
	}
	u, err := us.GetUser(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	action := "user.enable"
	if req.GetDisabled() {
		action = "user.disable"
	}
	u.Disabled = req.GetDisabled()
	u, err = us.UpdateUser(ctx, s.cfg.Actor(ctx), action, u)
	if err != nil {
		return nil, err
	}
	return &adminv1.SetUserDisabledResponse{User: s.userProto(u)}, nil
}

// GetLoginConfig says how to log in: the trust bundle and the OpenID provider, if any.
func (s *Service) GetLoginConfig(context.Context, *adminv1.GetLoginConfigRequest) (*adminv1.GetLoginConfigResponse, error) {
	resp := &adminv1.GetLoginConfigResponse{}
	if s.cfg.Logins.OIDC != nil {
		resp = s.cfg.Logins.OIDC.Settings()
	}
	resp.TrustDomain = s.cfg.TrustDomain.Name()
	for _, c := range s.cfg.CA.Bundle().X509Authorities() {
		resp.X509Authorities = append(resp.X509Authorities, c.Raw)
	}
	return resp, nil
}

func (s *Service) loginTTLs() (svid, login time.Duration) {
	svid, login = s.cfg.Logins.SVIDTTL, s.cfg.Logins.LoginTTL
	if svid == 0 {
		svid = 8 * time.Hour
	}
	if login == 0 {
		login = 7 * 24 * time.Hour
	}
	if s.cfg.X509TTL.Max > 0 {
		svid = min(svid, s.cfg.X509TTL.Max)
	}
	return svid, login
}

// signUser signs an X.509-SVID for user name with csr, lasting at most until loginExp.
func (s *Service) signUser(ctx context.Context, name string, csr []byte, loginExp time.Time) ([]*x509.Certificate, error) {
	if len(csr) == 0 {
		return nil, apierr.Invalid("csr is required: the client makes the key and sends a PKCS#10 request")
	}
	svidTTL, _ := s.loginTTLs()
	ttl := min(svidTTL, loginExp.Sub(s.cfg.Now()))
	if ttl < time.Minute {
		return nil, fmt.Errorf("the login ends at %s: log in again (kith login): %w", loginExp.UTC().Format(time.RFC3339), store.ErrFailedPrecondition)
	}
	start := time.Now()
	chain, err := s.cfg.CA.SignX509SVID(ctx, ca.X509SVIDRequest{ID: UserID(s.cfg.TrustDomain, name), CSR: csr, TTL: ttl})
	if err != nil {
		return nil, fmt.Errorf("sign x509-svid for user %s: %w", name, err)
	}
	s.cfg.OnIssue("x509", time.Since(start))
	return chain, nil
}

func (s *Service) loginResponse(name string, chain []*x509.Certificate, l store.Login) *adminv1.LoginResponse {
	resp := &adminv1.LoginResponse{SpiffeId: UserID(s.cfg.TrustDomain, name).String(), ExpiresAt: timestamppb.New(chain[0].NotAfter),
		LoginId: l.ID, LoginExpiresAt: timestamppb.New(l.ExpiresAt)}
	for _, c := range chain {
		resp.CertChain = append(resp.CertChain, c.Raw)
	}
	for _, c := range s.cfg.CA.Bundle().X509Authorities() {
		resp.X509Authorities = append(resp.X509Authorities, c.Raw)
	}
	return resp
}

// Login exchanges an enrolment code or an ID token (and a CSR) for the user's X.509-SVID.
func (s *Service) Login(ctx context.Context, req *adminv1.LoginRequest) (*adminv1.LoginResponse, error) {
	us, err := s.users()
	if err != nil {
		return nil, err
	}
	if _, err := x509.ParseCertificateRequest(req.GetCsr()); err != nil {
		return nil, apierr.Invalid(fmt.Sprintf("csr is not a PKCS#10 certificate request: %v", err))
	}
	_, loginTTL := s.loginTTLs()
	now := s.cfg.Now()
	var (
		name string
		l    store.Login
	)
	switch cred := req.GetCredential().(type) {
	case *adminv1.LoginRequest_EnrolmentCode:
		_, l, err = us.UseEnrolmentCode(ctx, "spiffe://"+s.cfg.TrustDomain.Name()+UserPath, codeHash(cred.EnrolmentCode), now,
			store.Login{Method: "code", ExpiresAt: now.Add(loginTTL)})
		switch {
		case errors.Is(err, store.ErrCodeInvalid):
			s.audit(ctx, "login", "user.login.refused", "", map[string]string{"method": "code", "reason": err.Error()})
			return nil, apierr.Denied(err.Error() + ": ask an administrator for a new one (kith user code NAME)")
		case errors.Is(err, store.ErrFailedPrecondition):
			return nil, apierr.Denied(err.Error() + ": ask an administrator to enable the user")
		case err != nil:
			return nil, err
		}
		name = l.User
	case *adminv1.LoginRequest_IdToken:
		if s.cfg.Logins.OIDC == nil {
			return nil, apierr.Invalid("this server does not accept OpenID Connect logins (users.oidc is not configured): log in with an enrolment code")
		}
		claimed, err := s.cfg.Logins.OIDC.Verify(ctx, cred.IdToken, req.GetAccessToken())
		if err != nil {
			s.audit(ctx, "login", "user.login.refused", "", map[string]string{"method": "oidc", "reason": err.Error()})
			return nil, apierr.Denied(fmt.Sprintf("id token refused: %v", err))
		}
		actor := UserID(s.cfg.TrustDomain, claimed.Name).String()
		u, err := us.GetUser(ctx, claimed.Name)
		switch {
		case errors.Is(err, store.ErrNotFound):
			claimed.Source = "oidc"
			if _, err := us.CreateUser(ctx, actor, claimed); err != nil {
				return nil, err
			}
		case err != nil:
			return nil, err
		case u.Disabled:
			return nil, apierr.Denied(fmt.Sprintf("user %s is disabled: ask an administrator to enable the user", u.Name))
		case u.Source == "oidc" && (!maps.Equal(u.Labels, claimed.Labels) || !slices.Equal(u.Roles, claimed.Roles)):
			// The provider is the source of truth of the labels and roles of the users it introduced.
			u.Labels, u.Roles = claimed.Labels, claimed.Roles
			if _, err := us.UpdateUser(ctx, actor, "user.update", u); err != nil {
				return nil, err
			}
		}
		if l, err = us.CreateLogin(ctx, actor, store.Login{User: claimed.Name, Method: "oidc", ExpiresAt: now.Add(loginTTL)}); err != nil {
			return nil, err
		}
		name = claimed.Name
	default:
		return nil, apierr.Invalid("give an enrolment_code or an id_token")
	}
	chain, err := s.signUser(ctx, name, req.GetCsr(), l.ExpiresAt)
	if err != nil {
		return nil, err
	}
	if l, err = us.RenewLogin(ctx, l.ID, "", chain[0].SerialNumber.Text(16), now); err != nil {
		return nil, err
	}
	s.cfg.Logger.Info("user logged in", "user", name, "method", l.Method, "login", l.ID, "expires_at", chain[0].NotAfter)
	return s.loginResponse(name, chain, l), nil
}

func (s *Service) audit(ctx context.Context, actor, action, target string, detail any) {
	if err := s.cfg.Audit.Audit(ctx, actor, action, target, detail); err != nil {
		s.cfg.Logger.Warn("audit", "action", action, "error", err)
	}
}

// CallerUser returns the enabled user behind a call on the admin TCP listener: ErrPermissionDenied when the
// caller presented no user SVID, is unknown or is disabled.
func (s *Service) CallerUser(ctx context.Context) (store.User, *x509.Certificate, error) {
	leaf, id, ok := PeerSVID(ctx)
	if !ok {
		return store.User{}, nil, apierr.Denied("this call needs a user's X.509-SVID: log in first (kith login)")
	}
	name, ok := UserOf(s.cfg.TrustDomain, id)
	if !ok {
		return store.User{}, nil, apierr.Denied(fmt.Sprintf("%s is not a user (spiffe://%s/user/NAME): the admin TCP listener serves people; workloads use their agent", id, s.cfg.TrustDomain))
	}
	us, err := s.users()
	if err != nil {
		return store.User{}, nil, err
	}
	u, err := s.cache.user(ctx, us, name)
	if errors.Is(err, store.ErrNotFound) {
		return store.User{}, nil, apierr.Denied(fmt.Sprintf("user %s does not exist (any more)", name))
	} else if err != nil {
		return store.User{}, nil, err
	}
	if u.Disabled {
		return store.User{}, nil, apierr.Denied(fmt.Sprintf("user %s is disabled", name))
	}
	return u, leaf, nil
}

// RenewLogin signs a new SVID for the caller's login, while the login lasts and the user is enabled.
func (s *Service) RenewLogin(ctx context.Context, req *adminv1.RenewLoginRequest) (*adminv1.RenewLoginResponse, error) {
	us, err := s.users()
	if err != nil {
		return nil, err
	}
	u, leaf, err := s.CallerUser(ctx)
	if err != nil {
		return nil, err
	}
	l, err := us.GetLogin(ctx, req.GetLoginId())
	if errors.Is(err, store.ErrNotFound) || (err == nil && l.User != u.Name) {
		return nil, apierr.Denied(fmt.Sprintf("login %q is not a login of %s: log in again (kith login)", logclip.Cut(req.GetLoginId(), 40), u.Name))
	} else if err != nil {
		return nil, err
	}
	chain, err := s.signUser(ctx, u.Name, req.GetCsr(), l.ExpiresAt)
	if err != nil {
		return nil, err
	}
	l, err = us.RenewLogin(ctx, l.ID, leaf.SerialNumber.Text(16), chain[0].SerialNumber.Text(16), s.cfg.Now())
	if err != nil {
		return nil, err
	}
	resp := &adminv1.RenewLoginResponse{ExpiresAt: timestamppb.New(chain[0].NotAfter), LoginExpiresAt: timestamppb.New(l.ExpiresAt)}
	for _, c := range chain {
		resp.CertChain = append(resp.CertChain, c.Raw)
	}
	return resp, nil
}

// WhoAmI names the caller.
func (s *Service) WhoAmI(ctx context.Context, _ *adminv1.WhoAmIRequest) (*adminv1.WhoAmIResponse, error) {
	resp := &adminv1.WhoAmIResponse{Actor: s.cfg.Actor(ctx)}
	if _, _, ok := PeerSVID(ctx); ok {
		u, _, err := s.CallerUser(ctx)
		if err != nil {
			return nil, err
		}
		resp.User = s.userProto(u)
	}
	return resp, nil
}
