package storetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/internal/store"
)

// Users, their enrolment codes (single use, expiring, refused for a disabled user), logins (renewed only
// from the newest certificate and before they expire) and access requests (decided once; an approval
// creates its grant in the same change).
func testUsers(t *testing.T, h harness) {
	ctx := context.Background()
	s := h.new(t)
	hash := func(secret string) []byte { h := sha256.Sum256([]byte(secret)); return h[:] }
	scott, err := s.CreateUser(ctx, "cli:uid=0", store.User{Name: "scott", Labels: map[string]string{"team": "payments"}, Roles: []string{"admin"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateUser(ctx, "cli:uid=0", store.User{Name: "ann"}); err != nil {
		t.Fatal(err)
	}

	t.Run("a user reads back as created, with source cli", func(t *testing.T) {
		got, err := s.GetUser(ctx, "scott")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(scott, got); diff != "" {
			t.Errorf("GetUser (-created +got):\n%s", diff)
		}
		if got.Source != "cli" || got.Revision == 0 || got.CreatedAt.IsZero() {
			t.Errorf("source %q revision %d created %v: want cli, a revision and a time", got.Source, got.Revision, got.CreatedAt)
		}
	})
	t.Run("a taken name is refused and an unknown one is not found", func(t *testing.T) {
		if _, err := s.CreateUser(ctx, "cli:uid=0", store.User{Name: "scott"}); !errors.Is(err, store.ErrAlreadyExists) {
			t.Errorf("second scott: %v, want ErrAlreadyExists", err)
		}
		if _, err := s.GetUser(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetUser(nobody): %v, want ErrNotFound", err)
		}
	})
	t.Run("list orders by name", func(t *testing.T) {
		us, err := s.ListUsers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, u := range us {
			names = append(names, u.Name)
		}
		if diff := cmp.Diff([]string{"ann", "scott"}, names); diff != "" {
			t.Errorf("names (-want +got):\n%s", diff)
		}
	})
	t.Run("an enrolment code is used once, and makes a login audited as the user", func(t *testing.T) {
		c, err := s.CreateEnrolmentCode(ctx, "cli:uid=0", store.EnrolmentCode{User: "scott", Hash: hash("code1"), ExpiresAt: t0.Add(24 * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		used, l, err := s.UseEnrolmentCode(ctx, "spiffe://kith.test/user/", hash("code1"), t0.Add(time.Hour), store.Login{Method: "code", Serial: "01", ExpiresAt: t0.Add(48 * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if used.ID != c.ID || used.UsedAt.IsZero() || l.User != "scott" || l.ID == "" {
			t.Errorf("used %+v login %+v: want the code used and a login of scott", used, l)
		}
		if _, _, err := s.UseEnrolmentCode(ctx, "spiffe://kith.test/user/", hash("code1"), t0.Add(time.Hour), store.Login{Method: "code"}); !errors.Is(err, store.ErrCodeInvalid) {
			t.Errorf("second use: %v, want ErrCodeInvalid", err)
		}
		evs, err := s.ListAudit(ctx, store.AuditFilter{NewestFirst: true, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if evs[0].Action != "user.login" || evs[0].Actor != "spiffe://kith.test/user/scott" {
			t.Errorf("last audit %s by %s, want user.login by spiffe://kith.test/user/scott", evs[0].Action, evs[0].Actor)
		}
	})
	t.Run("an expired or unknown code is invalid", func(t *testing.T) {
		if _, err := s.CreateEnrolmentCode(ctx, "cli:uid=0", store.EnrolmentCode{User: "scott", Hash: hash("code2"), ExpiresAt: t0.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		for name, secret := range map[string]string{"expired": "code2", "unknown": "code9"} {
			if _, _, err := s.UseEnrolmentCode(ctx, "spiffe://kith.test/user/", hash(secret), t0.Add(2*time.Hour), store.Login{Method: "code"}); !errors.Is(err, store.ErrCodeInvalid) {
				t.Errorf("%s code: %v, want ErrCodeInvalid", name, err)
			}
		}
		if _, err := s.CreateEnrolmentCode(ctx, "cli:uid=0", store.EnrolmentCode{User: "nobody", Hash: hash("code3")}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("code for an unknown user: %v, want ErrNotFound", err)
		}
	})
	t.Run("a disabled user's code is refused and the disable is one audited change", func(t *testing.T) {
		if _, err := s.CreateEnrolmentCode(ctx, "cli:uid=0", store.EnrolmentCode{User: "ann", Hash: hash("code4"), ExpiresAt: t0.Add(24 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
		before, _ := s.Revision(ctx)
		ann, err := s.UpdateUser(ctx, "cli:uid=0", "user.disable", store.User{Name: "ann", Disabled: true})
		if err != nil {
			t.Fatal(err)
		}
		after, _ := s.Revision(ctx)
		changes, _ := s.ChangesSince(ctx, before)
		if after != before+1 || !ann.Disabled || len(changes) != 1 || changes[0].Kind != store.KindUser {
			t.Errorf("disable: revision %d→%d, disabled %v, changes %+v: want one user change", before, after, ann.Disabled, changes)
		}
		if _, _, err := s.UseEnrolmentCode(ctx, "spiffe://kith.test/user/", hash("code4"), t0.Add(time.Hour), store.Login{Method: "code"}); !errors.Is(err, store.ErrFailedPrecondition) {
			t.Errorf("code of a disabled user: %v, want ErrFailedPrecondition", err)
		}
		if _, err := s.UpdateUser(ctx, "cli:uid=0", "user.disable", store.User{Name: "nobody"}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("update unknown: %v, want ErrNotFound", err)
		}
	})
	t.Run("a login renews from its newest serial only and not after it expires", func(t *testing.T) {
		l, err := s.CreateLogin(ctx, "spiffe://kith.test/user/scott", store.Login{User: "scott", Method: "oidc", Serial: "a1", ExpiresAt: t0.Add(8 * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		r, err := s.RenewLogin(ctx, l.ID, "a1", "a2", t0.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if r.Serial != "a2" {
			t.Errorf("serial %s, want a2", r.Serial)
		}
		if _, err := s.RenewLogin(ctx, l.ID, "a1", "a3", t0.Add(time.Hour)); !errors.Is(err, store.ErrFailedPrecondition) {
			t.Errorf("renew from an old serial: %v, want ErrFailedPrecondition", err)
		}
		if _, err := s.RenewLogin(ctx, l.ID, "a2", "a3", t0.Add(9*time.Hour)); !errors.Is(err, store.ErrFailedPrecondition) {
			t.Errorf("renew after expiry: %v, want ErrFailedPrecondition", err)
		}
		got, err := s.GetLogin(ctx, l.ID)
		if err != nil || got.Serial != "a2" {
			t.Errorf("GetLogin: %+v %v, want serial a2", got, err)
		}
	})
	t.Run("an access request is decided once; approval creates its grant in the same change", func(t *testing.T) {
		r, err := s.CreateAccessRequest(ctx, "spiffe://kith.test/user/scott", store.AccessRequest{Caller: "spiffe://kith.test/user/scott",
			Target: "spiffe://kith.test/payments", Duration: 2 * time.Hour, Reason: "incident 4411"})
		if err != nil {
			t.Fatal(err)
		}
		if r.State != store.RequestPending {
			t.Errorf("state %s, want pending", r.State)
		}
		before, _ := s.Revision(ctx)
		g := grant.Grant{Caller: r.Caller, Target: r.Target, Methods: []string{"*"}, Paths: []string{"/*"}, ExpiresAt: t0.Add(3 * time.Hour), Source: "request:" + r.ID}
		got, err := s.DecideAccessRequest(ctx, "spiffe://kith.test/user/ann", r.ID, "ok", &g)
		if err != nil {
			t.Fatal(err)
		}
		after, _ := s.Revision(ctx)
		if got.State != store.RequestApproved || got.Grant == "" || after != before+1 {
			t.Errorf("approved %+v, revision %d→%d: want approved with a grant in one revision", got, before, after)
		}
		if _, err := s.GetGrant(ctx, got.Grant); err != nil {
			t.Errorf("the approval's grant: %v", err)
		}
		if _, err := s.DecideAccessRequest(ctx, "x", r.ID, "no", nil); !errors.Is(err, store.ErrFailedPrecondition) {
			t.Errorf("second decision: %v, want ErrFailedPrecondition", err)
		}
		rs, err := s.ListAccessRequests(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]store.AccessRequest{got}, rs, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("list (-want +got):\n%s", diff)
		}
	})
	MustVerify(t, s)
}
