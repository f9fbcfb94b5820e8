// Package adminapi implements the administration API (kith.admin.v1) the CLI calls over the server's
// admin unix socket.
package adminapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/node/jointoken"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/internal/server/apierr"
	"github.com/kithid/kith/internal/store"
	"github.com/kithid/kith/logclip"
)

// EntryStore persists registration entries.
type EntryStore interface {
	CreateEntry(ctx context.Context, actor string, e store.Entry) (store.Entry, error)
	CreateEntries(ctx context.Context, actor string, es []store.Entry) ([]store.Entry, error)
	UpdateEntry(ctx context.Context, actor string, e store.Entry) (store.Entry, error)
	DeleteEntry(ctx context.Context, actor string, id string) (store.Entry, error)
	GetEntry(ctx context.Context, id string) (store.Entry, error)
	ListEntries(ctx context.Context, f store.EntryFilter) ([]store.Entry, error)
}

// TokenStore persists join tokens.
type TokenStore interface {
	CreateJoinToken(ctx context.Context, actor string, t store.JoinToken) (store.JoinToken, error)
	ListJoinTokens(ctx context.Context) ([]store.JoinToken, error)
	RevokeJoinToken(ctx context.Context, actor, id string) (store.JoinToken, error)
}

// AgentStore reads, evicts and bans agents.
type AgentStore interface {
	ListAgents(ctx context.Context) ([]store.Agent, error)
	GetAgent(ctx context.Context, id spiffeid.ID) (store.Agent, error)
	EvictAgent(ctx context.Context, actor string, id spiffeid.ID) (store.Agent, error)
	BanAgent(ctx context.Context, actor string, id spiffeid.ID) (store.Agent, error)
	UnbanAgent(ctx context.Context, actor string, id spiffeid.ID) (store.Agent, error)
}

// AuditLog reads and verifies the audit chain, and records acts that change nothing in the store (a minted
// SVID).
type AuditLog interface {
	Audit(ctx context.Context, actor, action, target string, detail any) error
	ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditEvent, error)
	VerifyAudit(ctx context.Context) (store.AuditVerification, error)
	Revision(ctx context.Context) (int64, error)
}

// Authority signs SVIDs and holds the bundle.
type Authority interface {
	SignX509SVID(ctx context.Context, req ca.X509SVIDRequest) ([]*x509.Certificate, error)
	SignJWTSVID(ctx context.Context, id spiffeid.ID, audience []string, ttl time.Duration) (string, time.Time, error)
	Bundle() *spiffebundle.Bundle
	Authorities() []ca.Authority
	Rotate(ctx context.Context, actor string, root bool) error
	Status() ca.Status
}

// Config builds a Service.
type Config struct {
	TrustDomain spiffeid.TrustDomain // required
	Entries     EntryStore           // required
	Tokens      TokenStore           // required
	Agents      AgentStore           // required
	Audit       AuditLog             // required
	CA          Authority            // required
	Grants      GrantStore           // required
	Decider     Decider              // required
	Logger      *slog.Logger         // zero: discard
	Now         func() time.Time     // zero: time.Now
	// Actor names the caller for the audit log; zero: "admin".
	Actor func(ctx context.Context) string
	// Federations keeps federated bundles and federation relationships; zero: those verbs fail.
	Federations FederationStore
	// Policy answers the policy verbs; zero: they fail.
	Policy PolicyAdmin
	// X509TTL and JWTTTL bound the lifetimes a request may ask for.
	X509TTL, JWTTTL TTLBounds
	// TokenTTL is the default join token lifetime, TokenMaxTTL the longest.
	TokenTTL, TokenMaxTTL time.Duration
	// DefaultParent, when set (kith dev), parents entries created without --parent or --node-selector.
	DefaultParent spiffeid.ID
	// Connected reports whether an agent holds a sync stream now; zero: never.
	Connected func(id spiffeid.ID) bool
	// Acknowledgements says which authorization data each agent reported enforcing; zero: none did.
	Acknowledgements Acknowledgements
	// OnIssue observes each SVID issued ("x509" or "jwt") and how long it took.
	OnIssue func(kind string, took time.Duration)
	// Version is reported by GetServerInfo.
	Version string
	// StoreCheck runs the store's integrity check for CheckStore; zero: CheckStore fails.
	StoreCheck StoreChecker
	// Logins configures users and how they log in; zero: the user verbs fail.
	Logins Logins
	// Requests persists access requests; zero: the request verbs fail.
	Requests RequestStore
	// AdminDecider decides admin calls over mTLS, and whether policy approves an access request at once;
	// zero: no request is approved by policy.
	AdminDecider AdminDecider
	// AuditHead is the audit log's signed checkpoint: VerifyAudit compares the log with it and GetAuditHead
	// returns it; zero: VerifyAudit checks the chain only and GetAuditHead fails.
	AuditHead AuditHeadSource
	// Kubernetes is what the server's Kubernetes controllers know, for GetKubernetesStatus; zero: no cluster
	// has them.
	Kubernetes func() []*adminv1.KubernetesCluster
	// LiveMeshClusters names the clusters whose controllers keep the smi: and istio: grants in step with
	// the cluster's policies: with any, the cluster is their source and ImportGrants refuses (but dry runs).
	LiveMeshClusters []string
	// ConsoleLogins makes one-time web console login links for CreateConsoleLogin, and ConsoleURL is the
	// console's address ("" when it is off). Zero: no console logins.
	ConsoleLogins interface {
		Issue(user spiffeid.ID) (token string, expires time.Time, err error)
	}
	ConsoleURL func() string
	// Feed signals the store's committed revisions; with it, the calling user and a target's owners are
	// read from the store once per change instead of on every call over the admin TCP listener. Zero: read
	// every time.
	Feed Feed
	// Activity is what the agents connected to this server last reported about an identity, for
	// GetIdentityActivity; zero: nothing reported.
	Activity func(spiffeID string) *adminv1.GetIdentityActivityResponse
}

// StoreChecker runs the store's integrity check (store.Health).
type StoreChecker interface {
	Check(ctx context.Context) (check string, problems []string, err error)
}

// AuditHeadSource holds the newest signed head of the audit log.
type AuditHeadSource interface {
	// Head returns the newest signed checkpoint, nil if there is none yet.
	Head() *adminv1.AuditHead
	// Problem is what was found at start when the log did not reach the checkpoint then (the first event
	// that does not fit, and why); "" if it did. The checkpoint has moved on since, so only this says it.
	Problem() (int64, string)
}

// Service implements adminv1.AdminServiceServer.
type Service struct {
	adminv1.UnimplementedAdminServiceServer
	cfg   Config
	cache *lookupCache
}

var _ adminv1.AdminServiceServer = (*Service)(nil)

// New validates cfg and returns the service.
func New(cfg Config) (*Service, error) {
	if cfg.TrustDomain.IsZero() || cfg.Entries == nil || cfg.Tokens == nil || cfg.Agents == nil || cfg.Audit == nil || cfg.CA == nil || cfg.Grants == nil || cfg.Decider == nil {
		return nil, fmt.Errorf("adminapi: trust domain, stores and CA are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Actor == nil {
		cfg.Actor = func(context.Context) string { return "admin" }
	}
	if cfg.Connected == nil {
		cfg.Connected = func(spiffeid.ID) bool { return false }
	}
	if cfg.OnIssue == nil {
		cfg.OnIssue = func(string, time.Duration) {}
	}
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = time.Hour
	}
	if cfg.TokenMaxTTL == 0 {
		cfg.TokenMaxTTL = 30 * 24 * time.Hour
	}
	return &Service{cfg: cfg, cache: &lookupCache{feed: cfg.Feed, now: cfg.Now}}, nil
}

// CreateEntry registers a workload.
func (s *Service) CreateEntry(ctx context.Context, req *adminv1.CreateEntryRequest) (*adminv1.CreateEntryResponse, error) {
	e, err := s.entryFromProto(req.GetEntry())
	if err != nil {
		return nil, err
	}
	e.ID = ""
	e, err = s.cfg.Entries.CreateEntry(ctx, s.cfg.Actor(ctx), e)
	if err != nil {
		return nil, err // the store's error names the operation and the entry
	}
	return &adminv1.CreateEntryResponse{Entry: entryToProto(e)}, nil
}

// BatchCreateEntries registers many workloads in one transaction.
func (s *Service) BatchCreateEntries(ctx context.Context, req *adminv1.BatchCreateEntriesRequest) (*adminv1.BatchCreateEntriesResponse, error) {
	es := make([]store.Entry, 0, len(req.GetEntries()))
	var bad []string // every invalid entry, by its index, so that one pass fixes the file
	for i, pe := range req.GetEntries() {
		e, err := s.entryFromProto(pe)
		if err != nil {
			if len(bad) == 0 && len(req.GetEntries()) == 1 {
				return nil, fmt.Errorf("entry %d: %w", i, err)
			}
			bad = append(bad, fmt.Sprintf("entry %d: %v", i, err))
			continue
		}
		e.ID = ""
		es = append(es, e)
	}
	if len(bad) > 0 {
		return nil, apierr.Invalid(fmt.Sprintf("%d of %d entries are invalid, none was created: %s", len(bad), len(req.GetEntries()), strings.Join(bad, "; ")))
	}
	created, err := s.cfg.Entries.CreateEntries(ctx, s.cfg.Actor(ctx), es)
	if err != nil {
		return nil, fmt.Errorf("create %d entries: %w", len(es), err)
	}
	resp := &adminv1.BatchCreateEntriesResponse{Entries: make([]*adminv1.Entry, len(created))}
	for i, e := range created {
		resp.Entries[i] = entryToProto(e)
		resp.Revision = max(resp.Revision, e.Revision)
	}
	return resp, nil
}

// GetEntry returns one entry.
func (s *Service) GetEntry(ctx context.Context, req *adminv1.GetEntryRequest) (*adminv1.GetEntryResponse, error) {
	e, err := s.cfg.Entries.GetEntry(ctx, req.GetId())
	if err != nil {
		return nil, fmt.Errorf("entry %q: %w", req.GetId(), err)
	}
	return &adminv1.GetEntryResponse{Entry: entryToProto(e)}, nil
}

// ListEntries lists entries, optionally filtered, a page at a time.
func (s *Service) ListEntries(ctx context.Context, req *adminv1.ListEntriesRequest) (*adminv1.ListEntriesResponse, error) {
	var f store.EntryFilter
	var err error
	if n := req.GetName(); n != "" {
		if len(n) > MaxIDLength || strings.HasPrefix(n, "/") || strings.HasSuffix(n, "/") || strings.Contains(n, "//") || strings.Contains(n, "://") {
			return nil, apierr.Invalid(fmt.Sprintf("name %q: give a short name of whole path segments, such as payments or sa/payments (at most %d bytes)", logclip.Cut(n, 100), MaxIDLength))
		}
		f.Name = n
	}
	if p := req.GetSpiffeIdPrefix(); p != "" {
		if len(p) > MaxIDLength || !strings.HasPrefix(p, "spiffe://") {
			return nil, apierr.Invalid(fmt.Sprintf("spiffe_id_prefix %q: give the start of a SPIFFE ID, such as spiffe://%s/ns/prod/ (at most %d bytes)", logclip.Cut(p, 100), s.cfg.TrustDomain, MaxIDLength))
		}
		f.SPIFFEIDPrefix = p
	}
	if req.GetSpiffeId() != "" {
		if f.SPIFFEID, err = ParseID(s.cfg.TrustDomain, "spiffe_id", req.GetSpiffeId()); err != nil {
			return nil, err
		}
	}
	if req.GetParentId() != "" {
		if f.ParentID, err = ParseID(s.cfg.TrustDomain, "parent_id", req.GetParentId()); err != nil {
			return nil, err
		}
	}
	f.SourcePrefix = req.GetSource()
	pg, err := newPager("ListEntries", strings.Join([]string{f.SPIFFEID.String(), f.ParentID.String(), f.Name, f.SPIFFEIDPrefix, f.SourcePrefix}, " "), req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	if len(pg.after) == 2 {
		f.After = store.EntryKey{SPIFFEID: pg.after[0], ID: pg.after[1]}
	}
	f.Limit = pg.size + 1 // one more than the page: whether there is a next one
	es, err := s.cfg.Entries.ListEntries(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("list entries: %w", err)
	}
	resp := &adminv1.ListEntriesResponse{Entries: make([]*adminv1.Entry, 0, min(len(es), pg.size))}
	for _, e := range es {
		pe := entryToProto(e)
		if !pg.add(pe, e.SPIFFEID.String(), e.ID) {
			resp.NextPageToken = pg.next()
			break
		}
		resp.Entries = append(resp.Entries, pe)
	}
	return resp, nil
}

// UpdateEntry replaces an entry's fields.
func (s *Service) UpdateEntry(ctx context.Context, req *adminv1.UpdateEntryRequest) (*adminv1.UpdateEntryResponse, error) {
	if req.GetEntry().GetId() == "" {
		return nil, apierr.Invalid("entry id is required: see kith entry list")
	}
	if err := s.refuseKept(ctx, "update", req.GetEntry().GetId()); err != nil {
		return nil, err
	}
	e, err := s.entryFromProto(req.GetEntry())
	if err != nil {
		return nil, err
	}
	e, err = s.cfg.Entries.UpdateEntry(ctx, s.cfg.Actor(ctx), e)
	if err != nil {
		return nil, fmt.Errorf("update entry %q: %w", req.GetEntry().GetId(), err)
	}
	return &adminv1.UpdateEntryResponse{Entry: entryToProto(e)}, nil
}

// DeleteEntry removes an entry.
func (s *Service) DeleteEntry(ctx context.Context, req *adminv1.DeleteEntryRequest) (*adminv1.DeleteEntryResponse, error) {
	if err := s.refuseKept(ctx, "delete", req.GetId()); err != nil {
		return nil, err
	}
	e, err := s.cfg.Entries.DeleteEntry(ctx, s.cfg.Actor(ctx), req.GetId())
	if err != nil {
		return nil, fmt.Errorf("delete entry %q: %w", req.GetId(), err)
	}
	return &adminv1.DeleteEntryResponse{Entry: entryToProto(e)}, nil
}

// refuseKept refuses to change an entry that something other than the admin API keeps (source
// "k8s:...": the Kubernetes controller would put it back or fight the change), as git grants are refused.
func (s *Service) refuseKept(ctx context.Context, verb, id string) error {
	old, err := s.cfg.Entries.GetEntry(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil // the update or delete says so
	}
	if err != nil {
		return fmt.Errorf("%s entry %q: %w", verb, id, err)
	}
	if src := old.Source; src != "" && src != "cli" {
		return apierr.Invalid(fmt.Sprintf("entry %s comes from %s: change or delete the Kubernetes resource (KithIdentity, or the pod) instead", id, src))
	}
	return nil
}

var tokenName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

// CreateJoinToken makes a one-time join token.
func (s *Service) CreateJoinToken(ctx context.Context, req *adminv1.CreateJoinTokenRequest) (*adminv1.CreateJoinTokenResponse, error) {
	if n := req.GetName(); n != "" && !tokenName.MatchString(n) {
		return nil, apierr.Invalid(fmt.Sprintf("token name %q is invalid: use letters, digits, '.', '_', '-' (at most 63), e.g. node1", n))
	}
	ttl := s.cfg.TokenTTL
	if req.GetTtlSeconds() != 0 {
		ttl = time.Duration(req.GetTtlSeconds()) * time.Second
		if ttl < time.Minute || ttl > s.cfg.TokenMaxTTL {
			return nil, apierr.Invalid(fmt.Sprintf("token ttl %s is outside the allowed range 1m0s to %s", ttl, s.cfg.TokenMaxTTL))
		}
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("make token secret: %w", err)
	}
	idb := make([]byte, 6)
	if _, err := rand.Read(idb); err != nil {
		return nil, fmt.Errorf("make token id: %w", err)
	}
	text := base64.RawURLEncoding.EncodeToString(secret)
	hash := sha256.Sum256([]byte(text))
	now := s.cfg.Now()
	t, err := s.cfg.Tokens.CreateJoinToken(ctx, s.cfg.Actor(ctx), store.JoinToken{
		ID:        hex.EncodeToString(idb),
		Name:      req.GetName(),
		Hash:      hash[:],
		CreatedAt: now,
		ExpiresAt: now.Add(ttl),
	})
	if err != nil {
		return nil, err // the store's error names the operation and the token
	}
	return &adminv1.CreateJoinTokenResponse{Token: s.tokenToProto(t), Secret: text}, nil
}

// ListJoinTokens lists join tokens (never their secrets).
func (s *Service) ListJoinTokens(ctx context.Context, req *adminv1.ListJoinTokensRequest) (*adminv1.ListJoinTokensResponse, error) {
	pg, err := newPager("ListJoinTokens", "", req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	ts, err := s.cfg.Tokens.ListJoinTokens(ctx)
	if err != nil {
		return nil, fmt.Errorf("list join tokens: %w", err)
	}
	resp := &adminv1.ListJoinTokensResponse{}
	// The store lists them oldest first (created_at, then ID); a fixed-width time keeps that order as text.
	resp.Tokens, resp.NextPageToken = pageIn(pg, ts, func(_ int, t store.JoinToken) []string {
		return []string{t.CreatedAt.UTC().Format("2006-01-02T15:04:05.000000000Z"), t.ID}
	}, s.tokenToProto)
	return resp, nil
}

var tokenID = regexp.MustCompile(`^[0-9a-f]{1,64}$`)

// RevokeJoinToken deletes an unused join token: its secret can no longer be used.
func (s *Service) RevokeJoinToken(ctx context.Context, req *adminv1.RevokeJoinTokenRequest) (*adminv1.RevokeJoinTokenResponse, error) {
	id := req.GetId()
	switch {
	case id == "":
		return nil, apierr.Invalid("token id is required: see the ID column of kith token list")
	case !tokenID.MatchString(id):
		return nil, apierr.Invalid(fmt.Sprintf("token id %q is invalid: it is the hex ID from kith token list (not the secret, not the name)", id))
	}
	t, err := s.cfg.Tokens.RevokeJoinToken(ctx, s.cfg.Actor(ctx), id)
	if err != nil {
		return nil, err // the store's error names the operation and the token
	}
	return &adminv1.RevokeJoinTokenResponse{Token: s.tokenToProto(t)}, nil
}

func (s *Service) tokenToProto(t store.JoinToken) *adminv1.JoinToken {
	pt := &adminv1.JoinToken{
		Id: t.ID, Name: t.Name, CreatedAt: ts(t.CreatedAt), ExpiresAt: ts(t.ExpiresAt), UsedAt: ts(t.UsedAt),
		AgentId: jointoken.AgentID(s.cfg.TrustDomain, t.Name, t.ID).String(),
	}
	if !t.UsedBy.IsZero() {
		pt.UsedBy = t.UsedBy.String()
	}
	return pt
}

// ListAgents lists attested agents.
func (s *Service) ListAgents(ctx context.Context, req *adminv1.ListAgentsRequest) (*adminv1.ListAgentsResponse, error) {
	pg, err := newPager("ListAgents", "", req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	as, err := s.cfg.Agents.ListAgents(ctx)
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	resp := &adminv1.ListAgentsResponse{}
	resp.Agents, resp.NextPageToken = pageIn(pg, as, func(_ int, a store.Agent) []string { return []string{a.ID.String()} }, s.agentToProto)
	return resp, nil
}

// GetAgent returns one agent.
func (s *Service) GetAgent(ctx context.Context, req *adminv1.GetAgentRequest) (*adminv1.GetAgentResponse, error) {
	id, err := ParseID(s.cfg.TrustDomain, "agent id", req.GetId())
	if err != nil {
		return nil, err
	}
	a, err := s.cfg.Agents.GetAgent(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("agent %s: %w", id, err)
	}
	return &adminv1.GetAgentResponse{Agent: s.agentToProto(a)}, nil
}

// EvictAgent evicts an agent: it can no longer renew or sync and must attest again.
func (s *Service) EvictAgent(ctx context.Context, req *adminv1.EvictAgentRequest) (*adminv1.EvictAgentResponse, error) {
	id, err := ParseID(s.cfg.TrustDomain, "agent id", req.GetId())
	if err != nil {
		return nil, err
	}
	a, err := s.cfg.Agents.EvictAgent(ctx, s.cfg.Actor(ctx), id)
	if err != nil {
		return nil, err // the store's error names the operation and the agent
	}
	return &adminv1.EvictAgentResponse{Agent: s.agentToProto(a)}, nil
}

// BanAgent evicts an agent and refuses its attestation until it is unbanned.
func (s *Service) BanAgent(ctx context.Context, req *adminv1.BanAgentRequest) (*adminv1.BanAgentResponse, error) {
	id, err := ParseID(s.cfg.TrustDomain, "agent id", req.GetId())
	if err != nil {
		return nil, err
	}
	a, err := s.cfg.Agents.BanAgent(ctx, s.cfg.Actor(ctx), id)
	if err != nil {
		return nil, err // the store's error names the operation and the agent
	}
	return &adminv1.BanAgentResponse{Agent: s.agentToProto(a)}, nil
}

// UnbanAgent lifts a ban: the agent may attest again with a new join token.
func (s *Service) UnbanAgent(ctx context.Context, req *adminv1.UnbanAgentRequest) (*adminv1.UnbanAgentResponse, error) {
	id, err := ParseID(s.cfg.TrustDomain, "agent id", req.GetId())
	if err != nil {
		return nil, err
	}
	a, err := s.cfg.Agents.UnbanAgent(ctx, s.cfg.Actor(ctx), id)
	if err != nil {
		return nil, err // the store's error names the operation and the agent
	}
	return &adminv1.UnbanAgentResponse{Agent: s.agentToProto(a)}, nil
}

func (s *Service) agentToProto(a store.Agent) *adminv1.Agent {
	return &adminv1.Agent{
		Id: a.ID.String(), AttestationType: a.AttestationType, Selectors: attestation.Strings(a.Selectors),
		SerialNumber: a.SerialNumber, ExpiresAt: ts(a.ExpiresAt), CreatedAt: ts(a.CreatedAt), UpdatedAt: ts(a.UpdatedAt),
		Evicted: a.Evicted, Banned: a.Banned, Connected: s.cfg.Connected(a.ID),
	}
}

// MintX509SVID signs a CSR for any workload ID in the trust domain (an administrator's act, audited by log).
func (s *Service) MintX509SVID(ctx context.Context, req *adminv1.MintX509SVIDRequest) (*adminv1.MintX509SVIDResponse, error) {
	start := time.Now()
	id, err := ParseWorkloadID(s.cfg.TrustDomain, "spiffe_id", req.GetSpiffeId())
	if err != nil {
		return nil, err
	}
	if len(req.GetCsr()) == 0 {
		return nil, apierr.Invalid("csr is required: the caller makes the key and sends a PKCS#10 request")
	}
	ttl, err := s.cfg.X509TTL.check("ttl", req.GetTtlSeconds())
	if err != nil {
		return nil, err
	}
	if err := ValidateDNSNames(req.GetDnsNames()); err != nil {
		return nil, err
	}
	chain, err := s.cfg.CA.SignX509SVID(ctx, ca.X509SVIDRequest{ID: id, CSR: req.GetCsr(), DNSNames: req.GetDnsNames(), TTL: ttl})
	if err != nil {
		return nil, fmt.Errorf("mint x509-svid for %s: %w", id, err)
	}
	serial := chain[0].SerialNumber.Text(16)
	// Minting an arbitrary identity is the most powerful admin act: no SVID leaves without its audit row.
	detail := map[string]any{"serial": serial, "expires_at": chain[0].NotAfter.UTC().Format(time.RFC3339), "ttl_seconds": int64(ttl / time.Second)}
	if len(req.GetDnsNames()) > 0 {
		detail["dns_names"] = req.GetDnsNames()
	}
	actor := s.cfg.Actor(ctx)
	if err := s.cfg.Audit.Audit(ctx, actor, "svid.mint.x509", id.String(), detail); err != nil {
		return nil, fmt.Errorf("mint x509-svid for %s: audit: %w", id, err)
	}
	resp := &adminv1.MintX509SVIDResponse{CertChain: make([][]byte, len(chain)), ExpiresAt: timestamppb.New(chain[0].NotAfter)}
	for i, c := range chain {
		resp.CertChain[i] = c.Raw
	}
	s.cfg.OnIssue("x509", time.Since(start))
	s.cfg.Logger.Info("minted x509-svid", "spiffe_id", id.String(), "actor", actor, "serial", serial, "expires_at", chain[0].NotAfter)
	return resp, nil
}

// MintJWTSVID signs a JWT-SVID for any workload ID in the trust domain.
func (s *Service) MintJWTSVID(ctx context.Context, req *adminv1.MintJWTSVIDRequest) (*adminv1.MintJWTSVIDResponse, error) {
	start := time.Now()
	id, err := ParseWorkloadID(s.cfg.TrustDomain, "spiffe_id", req.GetSpiffeId())
	if err != nil {
		return nil, err
	}
	if len(req.GetAudience()) == 0 {
		return nil, apierr.Invalid("audience is required: name the service that will receive the token (--audience)")
	}
	for _, a := range req.GetAudience() {
		if a == "" {
			return nil, apierr.Invalid("audience must not be empty")
		}
	}
	ttl, err := s.cfg.JWTTTL.check("ttl", req.GetTtlSeconds())
	if err != nil {
		return nil, err
	}
	tok, exp, err := s.cfg.CA.SignJWTSVID(ctx, id, req.GetAudience(), ttl)
	if err != nil {
		return nil, fmt.Errorf("mint jwt-svid for %s: %w", id, err)
	}
	actor := s.cfg.Actor(ctx)
	detail := map[string]any{"audience": req.GetAudience(), "expires_at": exp.UTC().Format(time.RFC3339), "ttl_seconds": int64(ttl / time.Second)}
	if err := s.cfg.Audit.Audit(ctx, actor, "svid.mint.jwt", id.String(), detail); err != nil {
		return nil, fmt.Errorf("mint jwt-svid for %s: audit: %w", id, err)
	}
	s.cfg.OnIssue("jwt", time.Since(start))
	s.cfg.Logger.Info("minted jwt-svid", "spiffe_id", id.String(), "actor", actor, "audience", req.GetAudience(), "expires_at", exp)
	return &adminv1.MintJWTSVIDResponse{Token: tok, ExpiresAt: timestamppb.New(exp)}, nil
}

// GetBundle returns the trust bundle.
func (s *Service) GetBundle(context.Context, *adminv1.GetBundleRequest) (*adminv1.GetBundleResponse, error) {
	b := s.cfg.CA.Bundle()
	doc, err := b.Marshal()
	if err != nil {
		return nil, fmt.Errorf("marshal bundle: %w", err)
	}
	seq, _ := b.SequenceNumber()
	resp := &adminv1.GetBundleResponse{TrustDomain: b.TrustDomain().Name(), SpiffeBundle: doc, SequenceNumber: seq}
	for _, c := range b.X509Authorities() {
		resp.X509Authorities = append(resp.X509Authorities, c.Raw)
	}
	return resp, nil
}

// ListAuthorities lists the CA's keys and their state.
func (s *Service) ListAuthorities(_ context.Context, req *adminv1.ListAuthoritiesRequest) (*adminv1.ListAuthoritiesResponse, error) {
	pg, err := newPager("ListAuthorities", "", req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	resp := &adminv1.ListAuthoritiesResponse{}
	// A handful of keys (active, prepared, retired ones kept until they expire), in the CA's order.
	resp.Authorities, resp.NextPageToken = pageIn(pg, s.authorities(), func(i int, _ *adminv1.Authority) []string { return position(i) },
		func(a *adminv1.Authority) *adminv1.Authority { return a })
	return resp, nil
}

// RotateCA forces a rotation.
func (s *Service) RotateCA(ctx context.Context, req *adminv1.RotateCARequest) (*adminv1.RotateCAResponse, error) {
	if err := s.cfg.CA.Rotate(ctx, s.cfg.Actor(ctx), req.GetRoot()); err != nil {
		return nil, fmt.Errorf("rotate ca: %w", err)
	}
	return &adminv1.RotateCAResponse{Authorities: s.authorities()}, nil
}

// GetCAStatus reports the signing intermediate's expiry, the next rotation and the upstream authority.
func (s *Service) GetCAStatus(context.Context, *adminv1.GetCAStatusRequest) (*adminv1.GetCAStatusResponse, error) {
	st := s.cfg.CA.Status()
	resp := &adminv1.GetCAStatusResponse{
		ServerName:     st.ServerName,
		IntermediateId: st.IntermediateID, IntermediateNotAfter: ts(st.IntermediateNotAfter),
		PrepareAt: ts(st.PrepareAt), ActivateAt: ts(st.ActivateAt),
	}
	if u := st.Upstream; u != nil {
		resp.Upstream, resp.UpstreamErrors, resp.UpstreamFailures = u.Name, u.Errors, int32(min(u.Failures, math.MaxInt32))
		resp.LastUpstreamError = logclip.Cut(u.LastError, 1024)
		resp.LastUpstreamErrorAt, resp.LastUpstreamSuccessAt, resp.UpstreamRetryAt = ts(u.LastErrorAt), ts(u.LastSuccessAt), ts(u.RetryAt)
	}
	return resp, nil
}

func (s *Service) authorities() []*adminv1.Authority {
	b := s.cfg.CA.Bundle()
	published := map[string]bool{}
	for _, c := range b.X509Authorities() {
		published[hex.EncodeToString(c.SubjectKeyId)] = true
		sum := sha256.Sum256(c.Raw) // an upstream root's authority ID (see ca.Authority)
		published[hex.EncodeToString(sum[:20])] = true
	}
	for kid := range b.JWTAuthorities() {
		published[kid] = true
	}
	var out []*adminv1.Authority
	for _, a := range s.cfg.CA.Authorities() {
		out = append(out, &adminv1.Authority{
			Id: a.ID, Kind: string(a.Kind), State: string(a.State), ParentId: a.ParentID,
			NotBefore: ts(a.NotBefore), NotAfter: ts(a.NotAfter), ActivatedAt: ts(a.ActivatedAt), RetiredAt: ts(a.RetiredAt),
			Published: published[a.ID], Owner: a.Owner,
		})
	}
	return out
}

// ListAuditEvents pages through the audit log.
func (s *Service) ListAuditEvents(ctx context.Context, req *adminv1.ListAuditEventsRequest) (*adminv1.ListAuditEventsResponse, error) {
	if req.GetLimit() < 0 || req.GetAfterSeq() < 0 {
		return nil, apierr.Invalid("limit and after_seq must not be negative")
	}
	filter := fmt.Sprint(req.GetAfterSeq(), req.GetNewestFirst(), req.GetSince().AsTime().UnixNano())
	pg, err := newPager("ListAuditEvents", filter, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	f := store.AuditFilter{AfterSeq: req.GetAfterSeq(), NewestFirst: req.GetNewestFirst()}
	if pg.after != nil {
		seq, err := strconv.ParseInt(pg.after[0], 10, 64)
		if err != nil {
			return nil, apierr.Invalid("page_token: not a next_page_token of ListAuditEvents")
		}
		if f.NewestFirst {
			f.BeforeSeq = seq
		} else {
			f.AfterSeq = seq
		}
	}
	f.Limit = pg.size + 1
	if l := int(req.GetLimit()); l > 0 && l < pg.size {
		pg.size, f.Limit = l, l // the caller's limit: no next page
	}
	if req.GetSince() != nil {
		if err := req.GetSince().CheckValid(); err != nil {
			return nil, apierr.Invalid(fmt.Sprintf("since: %v", err))
		}
		f.Since = req.GetSince().AsTime()
	}
	evs, err := s.cfg.Audit.ListAudit(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("list audit events: %w", err)
	}
	resp := &adminv1.ListAuditEventsResponse{}
	for _, e := range evs {
		pe := &adminv1.AuditEvent{
			Seq: e.Seq, Time: ts(e.Time), Actor: e.Actor, Action: e.Action, Target: e.Target, Detail: e.Detail,
			Revision: e.Revision, PrevHash: e.PrevHash, Hash: e.Hash,
		}
		if !pg.add(pe, strconv.FormatInt(e.Seq, 10)) {
			resp.NextPageToken = pg.next()
			break
		}
		resp.Events = append(resp.Events, pe)
	}
	return resp, nil
}

// VerifyAudit checks the audit hash chain, and that the log still reaches the signed checkpoint: rows
// removed from the end leave an intact chain, which only the checkpoint kept outside the database shows.
func (s *Service) VerifyAudit(ctx context.Context, _ *adminv1.VerifyAuditRequest) (*adminv1.VerifyAuditResponse, error) {
	// The checkpoint is read before the log: it is written after each commit, so the log read next has at
	// least its events.
	var head *adminv1.AuditHead
	if s.cfg.AuditHead != nil {
		head = s.cfg.AuditHead.Head()
	}
	v, err := s.cfg.Audit.VerifyAudit(ctx)
	if err != nil {
		return nil, fmt.Errorf("verify audit log: %w", err)
	}
	resp := &adminv1.VerifyAuditResponse{Ok: v.OK, Count: v.Count, BrokenAt: v.BrokenAt, Problem: v.Problem, HeadHash: v.HeadHash, Checkpoint: head}
	if s.cfg.AuditHead != nil && v.OK {
		if at, problem := s.cfg.AuditHead.Problem(); problem != "" {
			resp.Ok, resp.BrokenAt, resp.Problem = false, at, "at the server's start: "+problem
			return resp, nil
		}
	}
	if v.OK && head != nil {
		at, problem, err := store.CheckHead(ctx, s.cfg.Audit, head.GetCount(), head.GetHash(), v)
		if err != nil {
			return nil, fmt.Errorf("verify audit log against its checkpoint: %w", err)
		}
		if problem != "" {
			resp.Ok, resp.BrokenAt, resp.Problem = false, at, problem+" (checkpoint signed "+head.GetTime().AsTime().UTC().Format(time.RFC3339)+")"
		}
	}
	return resp, nil
}

// GetAuditHead returns the audit log's newest signed checkpoint.
func (s *Service) GetAuditHead(_ context.Context, _ *adminv1.GetAuditHeadRequest) (*adminv1.GetAuditHeadResponse, error) {
	if s.cfg.AuditHead == nil {
		return nil, fmt.Errorf("this server keeps no audit checkpoint: %w", store.ErrFailedPrecondition)
	}
	head := s.cfg.AuditHead.Head()
	if head == nil {
		return nil, fmt.Errorf("no audit checkpoint yet: the log is empty: %w", store.ErrFailedPrecondition)
	}
	return &adminv1.GetAuditHeadResponse{Head: head}, nil
}

// CheckStore runs the store's integrity check now.
func (s *Service) CheckStore(ctx context.Context, _ *adminv1.CheckStoreRequest) (*adminv1.CheckStoreResponse, error) {
	if s.cfg.StoreCheck == nil {
		return nil, fmt.Errorf("this server's store has no integrity check: %w", store.ErrFailedPrecondition)
	}
	start := s.cfg.Now()
	check, problems, err := s.cfg.StoreCheck.Check(ctx)
	if err != nil {
		return nil, fmt.Errorf("check store: %w", err)
	}
	return &adminv1.CheckStoreResponse{Ok: len(problems) == 0, Check: check, Problems: problems, TookMs: s.cfg.Now().Sub(start).Milliseconds()}, nil
}

// GetKubernetesStatus returns what the Kubernetes controllers know of the resources they watch.
func (s *Service) GetKubernetesStatus(context.Context, *adminv1.GetKubernetesStatusRequest) (*adminv1.GetKubernetesStatusResponse, error) {
	resp := &adminv1.GetKubernetesStatusResponse{}
	if s.cfg.Kubernetes != nil {
		resp.Clusters = s.cfg.Kubernetes()
	}
	return resp, nil
}

// GetIdentityActivity returns the X.509-SVIDs of an identity that agents hold and their decisions about it,
// as the agents connected to this server last reported them.
func (s *Service) GetIdentityActivity(_ context.Context, req *adminv1.GetIdentityActivityRequest) (*adminv1.GetIdentityActivityResponse, error) {
	id, err := spiffeid.FromString(req.GetSpiffeId())
	if err != nil {
		return nil, apierr.Invalid(fmt.Sprintf("spiffe_id %q: %v (want e.g. spiffe://%s/ns/shop/sa/web)", req.GetSpiffeId(), err, s.cfg.TrustDomain.Name()))
	}
	if s.cfg.Activity == nil {
		return &adminv1.GetIdentityActivityResponse{}, nil
	}
	return s.cfg.Activity(id.String()), nil
}

// CreateConsoleLogin returns a one-time link that signs the calling user in to the web console.
func (s *Service) CreateConsoleLogin(ctx context.Context, _ *adminv1.CreateConsoleLoginRequest) (*adminv1.CreateConsoleLoginResponse, error) {
	if _, _, ok := PeerSVID(ctx); !ok {
		return nil, apierr.Invalid("the console signs in people: log in first (kith login) and run kith console with that login; the local admin socket has no user to sign in")
	}
	u, _, err := s.CallerUser(ctx)
	if err != nil {
		return nil, err
	}
	url := ""
	if s.cfg.ConsoleURL != nil {
		url = s.cfg.ConsoleURL()
	}
	if s.cfg.ConsoleLogins == nil || url == "" {
		return nil, fmt.Errorf("%w: the web console is off on this server (ui.enabled; it is on by default on a loopback listen.http)", store.ErrFailedPrecondition)
	}
	token, expires, err := s.cfg.ConsoleLogins.Issue(UserID(s.cfg.TrustDomain, u.Name))
	if err != nil {
		return nil, err
	}
	s.audit(ctx, UserID(s.cfg.TrustDomain, u.Name).String(), "console.login", UserID(s.cfg.TrustDomain, u.Name).String(), map[string]any{"expires_at": expires})
	return &adminv1.CreateConsoleLoginResponse{Url: strings.TrimSuffix(url, "/") + "/login?token=" + token, ExpiresAt: timestamppb.New(expires)}, nil
}

// GetServerInfo describes the server.
func (s *Service) GetServerInfo(ctx context.Context, _ *adminv1.GetServerInfoRequest) (*adminv1.GetServerInfoResponse, error) {
	rev, err := s.cfg.Audit.Revision(ctx)
	if err != nil {
		return nil, fmt.Errorf("read revision: %w", err)
	}
	resp := &adminv1.GetServerInfoResponse{TrustDomain: s.cfg.TrustDomain.Name(), Version: s.cfg.Version, Revision: rev}
	if !s.cfg.DefaultParent.IsZero() {
		resp.DevAgentId = s.cfg.DefaultParent.String()
	}
	return resp, nil
}
