package adminapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/internal/server/apierr"
	"github.com/kithid/kith/internal/store"
	"github.com/kithid/kith/logclip"
)

// RequestStore persists access requests.
type RequestStore interface {
	CreateAccessRequest(ctx context.Context, actor string, r store.AccessRequest) (store.AccessRequest, error)
	GetAccessRequest(ctx context.Context, id string) (store.AccessRequest, error)
	ListAccessRequests(ctx context.Context) ([]store.AccessRequest, error)
	DecideAccessRequest(ctx context.Context, actor, id, reason string, g *grant.Grant) (store.AccessRequest, error)
}

// MaxRequestDuration is the longest grant an access request may ask for.
const MaxRequestDuration = 7 * 24 * time.Hour

func requestProto(r store.AccessRequest) *adminv1.AccessRequest {
	return &adminv1.AccessRequest{Id: r.ID, Caller: r.Caller, Target: r.Target, DurationSeconds: int64(r.Duration / time.Second),
		Reason: r.Reason, State: r.State, DecidedBy: r.DecidedBy, Decision: r.Decision, Grant: r.Grant,
		CreatedAt: ts(r.CreatedAt), DecidedAt: ts(r.DecidedAt)}
}

func (s *Service) requests() (RequestStore, error) {
	if s.cfg.Requests == nil {
		return nil, apierr.Invalid("access requests are not available on this server")
	}
	return s.cfg.Requests, nil
}

// requestGrant is the grant an approved request becomes: any method and path, for its duration from now.
func (s *Service) requestGrant(r store.AccessRequest, approver string) (*grant.Grant, error) {
	idb := make([]byte, 6)
	if _, err := rand.Read(idb); err != nil {
		return nil, fmt.Errorf("grant id: %w", err)
	}
	g := &grant.Grant{ID: "g-" + hex.EncodeToString(idb), Caller: r.Caller, Target: r.Target, // every method and path
		ExpiresAt: s.cfg.Now().Add(r.Duration), Reason: fmt.Sprintf("access request %s: %s", r.ID, r.Reason),
		CreatedBy: approver, Source: "request:" + r.ID}
	if err := g.Validate(); err != nil {
		return nil, apierr.Invalid(fmt.Sprintf("access request %s cannot become a grant: %v", r.ID, err))
	}
	return g, nil
}

// CreateAccessRequest records a user's request for a time-bound grant to a target; the kith.admin policy
// may approve it at once (auto_approve).
func (s *Service) CreateAccessRequest(ctx context.Context, req *adminv1.CreateAccessRequestRequest) (*adminv1.CreateAccessRequestResponse, error) {
	rs, err := s.requests()
	if err != nil {
		return nil, err
	}
	u, _, err := s.CallerUser(ctx)
	if err != nil {
		return nil, apierr.Denied("access requests are made by users: log in (kith login) and call kith request through the admin TCP listener")
	}
	target, err := ParseWorkloadID(s.cfg.TrustDomain, "target", req.GetTarget())
	if err != nil {
		return nil, err
	}
	d := time.Duration(req.GetDurationSeconds()) * time.Second
	if d < 10*time.Second || d > MaxRequestDuration {
		return nil, apierr.Invalid(fmt.Sprintf("duration %s: ask for between 10s and %s (--for)", d, MaxRequestDuration))
	}
	reason := strings.TrimSpace(req.GetReason())
	if reason == "" || len(reason) > 512 {
		return nil, apierr.Invalid("reason is required (at most 512 bytes): say why, e.g. --reason \"incident 4411\"")
	}
	caller := UserID(s.cfg.TrustDomain, u.Name).String()
	r, err := rs.CreateAccessRequest(ctx, caller, store.AccessRequest{Caller: caller, Target: target.String(), Duration: d, Reason: reason})
	if err != nil {
		return nil, err
	}
	if s.cfg.AdminDecider != nil {
		in, err := s.adminInput(ctx, "CreateAccessRequest", req)
		if err != nil {
			return nil, err
		}
		in.Caller = authz.AdminCaller{ID: caller, User: u.Name, Roles: u.Roles, Labels: u.Labels}
		dec, err := s.cfg.AdminDecider.DecideAdmin(ctx, in)
		if err != nil {
			return nil, err
		}
		if dec.AutoApprove {
			g, err := s.requestGrant(r, "policy")
			if err != nil {
				return nil, err
			}
			if r, err = rs.DecideAccessRequest(ctx, "policy", r.ID, "approved by policy (kith.admin.ext auto_approve)", g); err != nil {
				return nil, err
			}
		}
	}
	return &adminv1.CreateAccessRequestResponse{Request: requestProto(r)}, nil
}

// ListAccessRequests lists requests, newest first: a user sees their own and those to targets they own; an
// admin (or the admin socket) sees every one.
func (s *Service) ListAccessRequests(ctx context.Context, req *adminv1.ListAccessRequestsRequest) (*adminv1.ListAccessRequestsResponse, error) {
	rs, err := s.requests()
	if err != nil {
		return nil, err
	}
	all, err := rs.ListAccessRequests(ctx)
	if err != nil {
		return nil, err
	}
	var visible func(store.AccessRequest) (bool, error)
	if _, _, remote := PeerSVID(ctx); remote {
		u, _, err := s.CallerUser(ctx)
		if err != nil {
			return nil, err
		}
		me := UserID(s.cfg.TrustDomain, u.Name).String()
		admin := false
		for _, role := range u.Roles {
			admin = admin || role == "admin"
		}
		visible = func(r store.AccessRequest) (bool, error) {
			if admin || r.Caller == me {
				return true, nil
			}
			id, err := s.identity(ctx, r.Target)
			if err != nil {
				return false, err
			}
			for _, o := range id.Owners {
				if o == u.Name {
					return true, nil
				}
			}
			for _, t := range id.OwnerTeams {
				if u.Labels["team"] == t {
					return true, nil
				}
			}
			return false, nil
		}
	}
	var out []store.AccessRequest
	for _, r := range all {
		if req.GetState() != "" && r.State != req.GetState() {
			continue
		}
		if visible != nil {
			ok, err := visible(r)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
		}
		out = append(out, r)
	}
	pg, err := newPager("ListAccessRequests", req.GetState(), req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	resp := &adminv1.ListAccessRequestsResponse{}
	resp.Requests, resp.NextPageToken = pageIn(pg, out, func(i int, _ store.AccessRequest) []string { return position(i) }, requestProto)
	return resp, nil
}

// DecideAccessRequest approves (a time-bound grant from now) or denies a pending request.
func (s *Service) DecideAccessRequest(ctx context.Context, req *adminv1.DecideAccessRequestRequest) (*adminv1.DecideAccessRequestResponse, error) {
	rs, err := s.requests()
	if err != nil {
		return nil, err
	}
	r, err := rs.GetAccessRequest(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	reason := strings.TrimSpace(req.GetReason())
	if len(reason) > 512 {
		return nil, apierr.Invalid("reason is at most 512 bytes")
	}
	if !req.GetApprove() && reason == "" {
		return nil, apierr.Invalid(fmt.Sprintf("say why request %s is denied (--reason)", logclip.Cut(req.GetId(), 40)))
	}
	actor := s.cfg.Actor(ctx)
	var g *grant.Grant
	if req.GetApprove() {
		if g, err = s.requestGrant(r, actor); err != nil {
			return nil, err
		}
	}
	r, err = rs.DecideAccessRequest(ctx, actor, r.ID, reason, g)
	if err != nil {
		return nil, err
	}
	return &adminv1.DecideAccessRequestResponse{Request: requestProto(r)}, nil
}
