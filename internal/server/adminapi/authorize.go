package adminapi

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"

	"google.golang.org/grpc"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/internal/server/apierr"
	"github.com/kithid/kith/internal/store"
)

// AdminDecider authorizes admin calls made over mTLS (the kith.admin policy).
type AdminDecider interface {
	DecideAdmin(ctx context.Context, in authz.AdminInput) (authz.AdminDecision, error)
}

// Owner labels: an entry labelled owner=<user> is owned by that user, owner-team=<team> by every user
// labelled team=<team>.
const (
	OwnerLabel     = "owner"
	OwnerTeamLabel = "owner-team"
)

// unauthenticated are the calls the admin TCP listener answers without a client certificate.
var unauthenticated = map[string]bool{"Login": true, "GetLoginConfig": true}

// AuthorizeInterceptor authorizes every call on the admin TCP listener: Login and GetLoginConfig are open;
// every other call needs an enabled user's X.509-SVID, and what it asks is decided by d with the kith.admin
// policy. A refusal says why, and is audited.
func (s *Service) AuthorizeInterceptor(d AdminDecider) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		method := path.Base(info.FullMethod)
		if unauthenticated[method] {
			return h(ctx, req)
		}
		if err := s.Authorize(ctx, d, method, req); err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
}

// Authorize decides one call of method with req by the caller in ctx.
func (s *Service) Authorize(ctx context.Context, d AdminDecider, method string, req any) error {
	u, _, err := s.CallerUser(ctx)
	if err != nil {
		return err
	}
	in, err := s.adminInput(ctx, method, req)
	if err != nil {
		return err
	}
	in.Caller = authz.AdminCaller{ID: UserID(s.cfg.TrustDomain, u.Name).String(), User: u.Name, Roles: u.Roles, Labels: u.Labels}
	dec, err := d.DecideAdmin(ctx, in)
	if err != nil {
		return fmt.Errorf("authorize %s: %w", method, err)
	}
	if dec.Allowed {
		return nil
	}
	target := ""
	if in.Target != nil {
		target = in.Target.ID
	}
	s.audit(ctx, in.Caller.ID, "admin.refused", target, map[string]any{"method": method, "reasons": dec.Reasons})
	return apierr.Denied(fmt.Sprintf("%s may not %s: %s", u.Name, method, dec.Explain()))
}

// identity returns what the admin policy knows of an identity: its ID and its owners (from the labels of
// its entries). A pattern (".../*") has no owners.
func (s *Service) identity(ctx context.Context, id string) (*authz.AdminIdentity, error) {
	return s.cache.identity(ctx, id, s.readIdentity)
}

// readIdentity is identity read from the store.
func (s *Service) readIdentity(ctx context.Context, id string) (*authz.AdminIdentity, error) {
	out := &authz.AdminIdentity{ID: id}
	if id == "" {
		return out, nil
	}
	parsed, err := ParseID(s.cfg.TrustDomain, "identity", id)
	if err != nil {
		return out, nil // a pattern or another trust domain: no entries, no owners
	}
	es, err := s.cfg.Entries.ListEntries(ctx, store.EntryFilter{SPIFFEID: parsed, Limit: 100})
	if err != nil {
		return nil, fmt.Errorf("owners of %s: %w", id, err)
	}
	for _, e := range es {
		if o := e.Labels[OwnerLabel]; o != "" && !slices.Contains(out.Owners, o) {
			out.Owners = append(out.Owners, o)
		}
		if t := e.Labels[OwnerTeamLabel]; t != "" && !slices.Contains(out.OwnerTeams, t) {
			out.OwnerTeams = append(out.OwnerTeams, t)
		}
	}
	slices.Sort(out.Owners)
	slices.Sort(out.OwnerTeams)
	return out, nil
}

// adminInput is what the admin policy is told about one call: the identity it is about (target) and the
// other one it names (subject), read from the request.
func (s *Service) adminInput(ctx context.Context, method string, req any) (authz.AdminInput, error) {
	in := authz.AdminInput{Method: method}
	var target, subject string
	switch r := req.(type) {
	case *adminv1.GetIdentityActivityRequest:
		target = r.GetSpiffeId()
	case *adminv1.CreateGrantRequest:
		target, subject = r.GetGrant().GetTarget(), r.GetGrant().GetCaller()
	case *adminv1.RevokeGrantsRequest:
		target, subject = r.GetTarget(), r.GetCaller()
		if r.GetId() != "" {
			g, err := s.cfg.Grants.GetGrant(ctx, r.GetId())
			if errors.Is(err, store.ErrNotFound) {
				return in, err
			} else if err != nil {
				return in, err
			}
			target, subject = g.Target, g.Caller
		}
	case *adminv1.SetTargetModeRequest:
		target = r.GetTarget()
	case *adminv1.CanRequest:
		target, subject = r.GetTarget(), r.GetCaller()
	case *adminv1.ListGrantsRequest:
		target, subject = r.GetTarget(), r.GetCaller()
	case *adminv1.MintJWTSVIDRequest:
		target = r.GetSpiffeId()
	case *adminv1.CreateAccessRequestRequest:
		target = r.GetTarget()
		in.Request = map[string]any{"duration_seconds": r.GetDurationSeconds(), "reason": r.GetReason()}
	case *adminv1.DecideAccessRequestRequest:
		if s.cfg.Requests == nil {
			break
		}
		ar, err := s.cfg.Requests.GetAccessRequest(ctx, r.GetId())
		if err != nil {
			return in, err
		}
		target, subject = ar.Target, ar.Caller
		in.Request = map[string]any{"approve": r.GetApprove(), "duration_seconds": int64(ar.Duration.Seconds()), "reason": ar.Reason}
	}
	var err error
	if target != "" {
		if in.Target, err = s.identity(ctx, target); err != nil {
			return in, err
		}
	}
	if subject != "" {
		in.Subject = &authz.AdminIdentity{ID: subject}
	}
	return in, nil
}
