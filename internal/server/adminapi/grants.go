package adminapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/internal/grantpb"
	"github.com/kithid/kith/internal/server/apierr"
	"github.com/kithid/kith/internal/store"
	"github.com/kithid/kith/logclip"
)

// GrantStore persists grants and target modes.
type GrantStore interface {
	CreateGrant(ctx context.Context, actor string, g grant.Grant) (grant.Grant, error)
	ReplaceGrantsFromSource(ctx context.Context, actor, prefix, source string, grants []grant.Grant) error
	DeleteGrant(ctx context.Context, actor, id string) (grant.Grant, error)
	GetGrant(ctx context.Context, id string) (grant.Grant, error)
	ListGrants(ctx context.Context, f store.GrantFilter) ([]grant.Grant, error)
	SetTargetMode(ctx context.Context, actor, target string, mode grant.Mode) error
	TargetModes(ctx context.Context) (map[string]grant.Mode, error)
}

// Decider evaluates a request with the same engine, grants and policy the agents enforce.
type Decider interface {
	Decide(ctx context.Context, in authz.Input) (authz.Decision, error)
}

// parsePattern checks a grant's caller or target: a SPIFFE ID or a prefix ending in /* in the trust domain.
func (s *Service) parsePattern(field, v string) (string, error) {
	if v == "" {
		return "", apierr.Invalid(field + " is required")
	}
	idPart := strings.TrimSuffix(v, "/*")
	if v == "spiffe://"+s.cfg.TrustDomain.Name()+"/*" {
		return v, nil
	}
	if _, err := ParseID(s.cfg.TrustDomain, field, idPart); err != nil {
		return "", err
	}
	return v, nil
}

// parseCallerPattern checks a grant's caller: as parsePattern, or a SPIFFE ID (or prefix ending in /*) of
// a federated trust domain this server holds a bundle for.
func (s *Service) parseCallerPattern(ctx context.Context, v string) (string, error) {
	idPart := strings.TrimSuffix(v, "/*")
	td, err := spiffeid.TrustDomainFromString(idPart)
	if err != nil || td == s.cfg.TrustDomain {
		return s.parsePattern("caller", v)
	}
	if v != td.IDString()+"/*" {
		if _, err := ParseID(td, "caller", idPart); err != nil {
			return "", err
		}
	}
	if _, err := s.verifiedBy(ctx, td); err != nil {
		return "", err
	}
	return v, nil
}

// verifiedBy says which bundle verifies callers of td, or why none does (an InvalidArgument error).
func (s *Service) verifiedBy(ctx context.Context, td spiffeid.TrustDomain) (string, error) {
	if td == s.cfg.TrustDomain {
		b := s.cfg.CA.Bundle()
		seq, _ := b.SequenceNumber()
		return fmt.Sprintf("the bundle of %s (this server's CA, sequence %d)", td.Name(), seq), nil
	}
	if s.cfg.Federations != nil {
		bs, err := s.cfg.Federations.ListBundles(ctx)
		if err != nil {
			return "", err
		}
		for _, b := range bs {
			if b.TrustDomain == td {
				return fmt.Sprintf("the federated bundle of %s (%s, sequence %d, updated %s)", td.Name(), b.Source, b.Sequence,
					b.UpdatedAt.UTC().Format(time.RFC3339)), nil
			}
		}
	}
	return "", apierr.Invalid(fmt.Sprintf("callers from trust domain %s cannot be verified: this server holds no bundle for it; federate with it first (kith federation create --trust-domain %s ...) or set its bundle (kith bundle set %s --file FILE)", td.Name(), td.Name(), td.Name()))
}

// CreateGrant records "caller may call target".
func (s *Service) CreateGrant(ctx context.Context, req *adminv1.CreateGrantRequest) (*adminv1.CreateGrantResponse, error) {
	pg := req.GetGrant()
	if pg == nil {
		return nil, apierr.Invalid("grant is required")
	}
	caller, err := s.parseCallerPattern(ctx, pg.GetCaller())
	if err != nil {
		return nil, err
	}
	target, err := s.parsePattern("target", pg.GetTarget())
	if err != nil {
		return nil, err
	}
	idb := make([]byte, 6)
	if _, err := rand.Read(idb); err != nil {
		return nil, fmt.Errorf("grant id: %w", err)
	}
	g := grant.Grant{ID: "g-" + hex.EncodeToString(idb), Caller: caller, Target: target, Reason: pg.GetReason(), CreatedBy: s.cfg.Actor(ctx), Source: "cli"}
	for _, m := range pg.GetMethods() {
		g.Methods = append(g.Methods, strings.ToUpper(m))
	}
	g.Paths = pg.GetPaths()
	g.PathRegex, g.Ports, g.NotPaths, g.NotCallers, g.Deny = pg.GetPathRegex(), pg.GetPorts(), pg.GetNotPaths(), pg.GetNotCallers(), pg.GetDeny()
	for _, m := range pg.GetNotMethods() {
		g.NotMethods = append(g.NotMethods, strings.ToUpper(m))
	}
	if len(pg.GetHeaders()) > 0 {
		g.Headers = map[string]string{}
		for k, v := range pg.GetHeaders() {
			g.Headers[strings.ToLower(k)] = v
		}
	}
	if pg.GetExpiresAt() != nil {
		g.ExpiresAt = pg.GetExpiresAt().AsTime()
		if !g.ExpiresAt.After(s.cfg.Now()) {
			return nil, apierr.Invalid(fmt.Sprintf("expiry %s is in the past", g.ExpiresAt.Format(time.RFC3339)))
		}
	}
	if err := g.Validate(); err != nil {
		return nil, apierr.Invalid(err.Error())
	}
	g, err = s.cfg.Grants.CreateGrant(ctx, s.cfg.Actor(ctx), g)
	if err != nil {
		return nil, fmt.Errorf("create grant: %w", err)
	}
	rev, err := s.cfg.Audit.Revision(ctx)
	if err != nil {
		return nil, fmt.Errorf("read revision: %w", err)
	}
	return &adminv1.CreateGrantResponse{Grant: s.grantProto(g), Revision: rev}, nil
}

// RevokeGrants removes a grant by ID, or every CLI grant from caller to target.
func (s *Service) RevokeGrants(ctx context.Context, req *adminv1.RevokeGrantsRequest) (*adminv1.RevokeGrantsResponse, error) {
	var ids []string
	switch {
	case req.GetId() != "":
		g, err := s.cfg.Grants.GetGrant(ctx, req.GetId())
		if err != nil {
			return nil, fmt.Errorf("revoke: %w (see kith grants list)", err)
		}
		if res, ok := strings.CutPrefix(g.Source, "k8s:"); ok {
			return nil, apierr.Invalid(fmt.Sprintf("grant %s comes from the KithGrant %s (%s): delete that resource to revoke it (kubectl delete kithgrant -n %s)", g.ID, res, g.Source, strings.Replace(res, "/", " ", 1)))
		}
		if kind, obj, ok := strings.Cut(g.Source, ":"); ok && (kind == "smi" || kind == "istio") {
			return nil, apierr.Invalid(fmt.Sprintf("grant %s comes from the %s policy %s (%s): import the policy again without it (kith import %s)", g.ID, kind, obj, g.Source, kind))
		}
		if g.Source != "cli" {
			return nil, apierr.Invalid(fmt.Sprintf("grant %s comes from the policy repository (%s): change the repository to remove it", g.ID, g.Source))
		}
		ids = []string{g.ID}
	case req.GetCaller() != "" && req.GetTarget() != "":
		var fromGit []string
		// List order is target, caller, ID: the grants from caller to target are together, from the key
		// (target, caller, "") on.
		err := s.scanGrants(ctx, store.GrantKey{Target: req.GetTarget(), Caller: req.GetCaller()}, func(g grant.Grant) bool {
			if g.Caller != req.GetCaller() || g.Target != req.GetTarget() {
				return false
			}
			if g.Source != "cli" {
				fromGit = append(fromGit, g.ID)
			} else {
				ids = append(ids, g.ID)
			}
			return true
		})
		if err != nil {
			return nil, err
		}
		if len(ids) == 0 {
			if len(fromGit) > 0 {
				return nil, apierr.Invalid(fmt.Sprintf("the grants from %s to %s (%s) come from the policy repository: change the repository to remove them", req.GetCaller(), req.GetTarget(), strings.Join(fromGit, ", ")))
			}
			return nil, apierr.Invalid(fmt.Sprintf("no grant from %s to %s: see kith grants list", req.GetCaller(), req.GetTarget()))
		}
	default:
		return nil, apierr.Invalid("give a grant ID, or a caller and a target")
	}
	resp := &adminv1.RevokeGrantsResponse{}
	for _, id := range ids {
		g, err := s.cfg.Grants.DeleteGrant(ctx, s.cfg.Actor(ctx), id)
		if err != nil {
			return nil, fmt.Errorf("revoke grant %s: %w", id, err)
		}
		resp.Grants = append(resp.Grants, s.grantProto(g))
	}
	var err error
	if resp.Revision, err = s.cfg.Audit.Revision(ctx); err != nil {
		return nil, fmt.Errorf("read revision: %w", err)
	}
	return resp, nil
}

// Acknowledgements tells which store revision's authorization data an agent reported enforcing.
type Acknowledgements interface {
	Acknowledged(id spiffeid.ID) int64
}

// enforcement sorts the agents that must enforce a change to the grants of targets made at store revision
// rev — those, not evicted, that serve an entry one of the targets covers — into acknowledged (reported
// enforcing rev or later) and pending; offline are the pending ones without a Sync stream now.
func (s *Service) enforcement(ctx context.Context, rev int64, targets []string) (acknowledged, pending, offline []string, err error) {
	var entries []store.Entry
	for _, t := range targets {
		f := store.EntryFilter{SPIFFEIDPrefix: strings.TrimSuffix(t, "*")}
		if !strings.HasSuffix(t, "/*") {
			if f.SPIFFEID, err = spiffeid.FromString(t); err != nil {
				return nil, nil, nil, apierr.Invalid(fmt.Sprintf("target %q: %v", t, err))
			}
			f.SPIFFEIDPrefix = ""
		}
		es, err := s.cfg.Entries.ListEntries(ctx, f)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("entries of %s: %w", t, err)
		}
		entries = append(entries, es...)
	}
	if len(entries) == 0 {
		return nil, nil, nil, nil
	}
	agents, err := s.cfg.Agents.ListAgents(ctx)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("list agents: %w", err)
	}
	for _, a := range agents {
		sels := attestation.NewSet(a.Selectors...)
		// The rule by which an agent serves an entry (agentapi's serves): its parent, or its node selectors.
		serves := func(e store.Entry) bool {
			return e.ParentID == a.ID || (len(e.NodeSelectors) > 0 && sels.ContainsAll(e.NodeSelectors))
		}
		if a.Evicted || !slices.ContainsFunc(entries, serves) {
			continue
		}
		if s.cfg.Acknowledgements != nil && s.cfg.Acknowledgements.Acknowledged(a.ID) >= rev {
			acknowledged = append(acknowledged, a.ID.String())
			continue
		}
		pending = append(pending, a.ID.String())
		if s.cfg.Connected == nil || !s.cfg.Connected(a.ID) {
			offline = append(offline, a.ID.String())
		}
	}
	return acknowledged, pending, offline, nil
}

// MaxGrantTargets bounds the targets of one GetEnforcement request (a revoke of every grant from caller to
// target names one).
const MaxGrantTargets = 64

// GetEnforcement says which of the agents that must enforce a change to the grants of some targets have
// acknowledged it.
func (s *Service) GetEnforcement(ctx context.Context, req *adminv1.GetEnforcementRequest) (*adminv1.GetEnforcementResponse, error) {
	if req.GetRevision() <= 0 {
		return nil, apierr.Invalid("revision must be positive: give the revision kith grant or kith revoke returned")
	}
	if len(req.GetTargets()) > MaxGrantTargets {
		return nil, apierr.Invalid(fmt.Sprintf("targets: %d given, at most %d", len(req.GetTargets()), MaxGrantTargets))
	}
	for _, t := range req.GetTargets() {
		if _, err := s.parsePattern("targets", t); err != nil {
			return nil, err
		}
	}
	resp := &adminv1.GetEnforcementResponse{}
	var err error
	resp.Acknowledged, resp.Pending, resp.Offline, err = s.enforcement(ctx, req.GetRevision(), req.GetTargets())
	if err != nil {
		return nil, fmt.Errorf("enforcement of revision %d: %w", req.GetRevision(), err)
	}
	return resp, nil
}

// grantScanChunk is how many grants scanGrants reads from the store at a time.
const grantScanChunk = 1000

// scanGrants calls f with each grant after key in list order, reading the store a chunk at a time, until
// f returns false or the grants run out.
func (s *Service) scanGrants(ctx context.Context, after store.GrantKey, f func(grant.Grant) bool) error {
	for {
		gs, err := s.cfg.Grants.ListGrants(ctx, store.GrantFilter{After: after, Limit: grantScanChunk})
		if err != nil {
			return fmt.Errorf("list grants: %w", err)
		}
		for _, g := range gs {
			if !f(g) {
				return nil
			}
		}
		if len(gs) < grantScanChunk {
			return nil
		}
		after = store.GrantKeyOf(gs[len(gs)-1])
	}
}

// ListGrants lists grants, optionally those that apply to a caller and/or target, a page at a time. The
// filters are patterns (a grant to spiffe://td/ns/* applies to spiffe://td/ns/x and the other way round),
// so the store is read in order a chunk at a time and the page ends where it is full.
func (s *Service) ListGrants(ctx context.Context, req *adminv1.ListGrantsRequest) (*adminv1.ListGrantsResponse, error) {
	caller, target, source := req.GetCaller(), req.GetTarget(), req.GetSource()
	pg, err := newPager("ListGrants", caller+" "+target+" "+source, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	var after store.GrantKey
	if len(pg.after) == 3 {
		after = store.GrantKey{Target: pg.after[0], Caller: pg.after[1], ID: pg.after[2]}
	}
	resp := &adminv1.ListGrantsResponse{}
	err = s.scanGrants(ctx, after, func(g grant.Grant) bool {
		if caller != "" && !grant.Covers(g.Caller, caller) && !grant.Covers(caller, g.Caller) {
			return true
		}
		if target != "" && !grant.Covers(g.Target, target) && !grant.Covers(target, g.Target) {
			return true
		}
		if source != "" && !SourceMatches(source, g.Source) {
			return true
		}
		pgr := s.grantProto(g)
		if !pg.add(pgr, g.Target, g.Caller, g.ID) {
			resp.NextPageToken = pg.next()
			return false
		}
		resp.Grants = append(resp.Grants, pgr)
		return true
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// SetTargetMode switches a target between enforce and audit.
func (s *Service) SetTargetMode(ctx context.Context, req *adminv1.SetTargetModeRequest) (*adminv1.SetTargetModeResponse, error) {
	target, err := ParseID(s.cfg.TrustDomain, "target", req.GetTarget())
	if err != nil {
		return nil, err
	}
	mode := grant.Mode(req.GetMode())
	if !slices.Contains([]grant.Mode{grant.ModeEnforce, grant.ModeAudit}, mode) {
		return nil, apierr.Invalid(fmt.Sprintf("mode %q: use enforce or audit", req.GetMode()))
	}
	if err := s.cfg.Grants.SetTargetMode(ctx, s.cfg.Actor(ctx), target.String(), mode); err != nil {
		return nil, fmt.Errorf("set mode of %s: %w", target, err)
	}
	return &adminv1.SetTargetModeResponse{}, nil
}

// ListTargetModes lists targets in audit mode.
func (s *Service) ListTargetModes(ctx context.Context, req *adminv1.ListTargetModesRequest) (*adminv1.ListTargetModesResponse, error) {
	pg, err := newPager("ListTargetModes", "", req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	modes, err := s.cfg.Grants.TargetModes(ctx)
	if err != nil {
		return nil, err
	}
	targets := slices.Sorted(maps.Keys(modes))
	resp := &adminv1.ListTargetModesResponse{Modes: map[string]string{}}
	for _, t := range targets {
		if pg.after != nil && t <= pg.after[0] {
			continue
		}
		if !pg.add(&adminv1.SetTargetModeRequest{Target: t, Mode: string(modes[t])}, t) {
			resp.NextPageToken = pg.next()
			break
		}
		resp.Modes[t] = string(modes[t])
	}
	return resp, nil
}

// Can explains whether caller may call target, with the engine the agents run.
func (s *Service) Can(ctx context.Context, req *adminv1.CanRequest) (*adminv1.CanResponse, error) {
	callerID, err := spiffeid.FromString(req.GetCaller())
	if err != nil {
		return nil, apierr.Invalid(fmt.Sprintf("caller %q is not a valid SPIFFE ID: %v", logclip.Cut(req.GetCaller(), 100), err))
	}
	caller, err := ParseID(callerID.TrustDomain(), "caller", req.GetCaller())
	if err != nil {
		return nil, err
	}
	verifiedBy, err := s.verifiedBy(ctx, caller.TrustDomain())
	if err != nil {
		verifiedBy = err.Error()
	}
	target, err := ParseID(s.cfg.TrustDomain, "target", req.GetTarget())
	if err != nil {
		return nil, err
	}
	method := strings.ToUpper(req.GetMethod())
	if method == "" {
		method = "GET"
	}
	path := req.GetPath()
	if path == "" {
		path = "/"
	}
	if !strings.HasPrefix(path, "/") {
		return nil, apierr.Invalid(fmt.Sprintf("path %q must start with /", path))
	}
	var headers map[string]string
	if len(req.GetHeaders()) > 0 {
		headers = make(map[string]string, len(req.GetHeaders()))
		for k, v := range req.GetHeaders() {
			headers[strings.ToLower(k)] = v
		}
	}
	d, err := s.cfg.Decider.Decide(ctx, authz.Input{Caller: caller, Target: target, Method: method, Path: path, Headers: headers, Port: req.GetPort()})
	if err != nil {
		return nil, fmt.Errorf("evaluate: %w", err)
	}
	return &adminv1.CanResponse{Allowed: d.Allowed, PolicyAllowed: d.PolicyAllowed, Reasons: d.Reasons, Mode: string(d.Mode),
		Headers: d.Headers, Grant: d.Grant, PolicyRevision: d.Revision, VerifiedBy: verifiedBy}, nil
}

func (s *Service) grantProto(g grant.Grant) *adminv1.Grant {
	pg := grantpb.ToAdmin(g)
	pg.Expired = !g.ExpiresAt.IsZero() && !s.cfg.Now().Before(g.ExpiresAt)
	return pg
}

// SourceMatches reports whether a grant's source is selected by filter: equal to it, or starting with it
// when the filter ends in ":" or "/" ("smi:" selects every SMI grant, "smi:default/" those of a namespace).
func SourceMatches(filter, source string) bool {
	if strings.HasSuffix(filter, ":") || strings.HasSuffix(filter, "/") {
		return strings.HasPrefix(source, filter)
	}
	return source == filter
}
