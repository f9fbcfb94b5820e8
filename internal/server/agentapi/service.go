// Package agentapi implements the agent API (kith.agent.v1) the server serves to node agents over mTLS:
// node attestation, agent SVID renewal, the Sync stream that pushes each agent the registration entries it
// serves, and the signing of workload SVIDs for those entries.
package agentapi

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/node"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/internal/server/apierr"
	"github.com/kithid/kith/internal/store"
)

// AgentStore reads and updates agent records.
type AgentStore interface {
	GetAgent(ctx context.Context, id spiffeid.ID) (store.Agent, error)
	UpsertAgent(ctx context.Context, actor, action string, a store.Agent) (store.Agent, error)
}

// EntryStore reads registration entries.
type EntryStore interface {
	GetEntry(ctx context.Context, id string) (store.Entry, error)
	ListEntries(ctx context.Context, f store.EntryFilter) ([]store.Entry, error)
}

// ChangeFeed tells Sync what changed in the store.
type ChangeFeed interface {
	Revision(ctx context.Context) (int64, error)
	ChangesSince(ctx context.Context, rev int64) ([]store.Change, error)
	// Watch sends committed revisions (coalescing) until the returned func is called or the store closes.
	Watch() (<-chan int64, func())
}

// AuditLog records events that change nothing, such as a refused attestation.
type AuditLog interface {
	Audit(ctx context.Context, actor, action, target string, detail any) error
}

// Authority signs SVIDs and publishes the trust bundle.
type Authority interface {
	SignX509SVID(ctx context.Context, req ca.X509SVIDRequest) ([]*x509.Certificate, error)
	SignJWTSVID(ctx context.Context, id spiffeid.ID, audience []string, ttl time.Duration) (string, time.Time, error)
	Bundle() *spiffebundle.Bundle
	// Subscribe signals (coalescing) every change of the authorities or the bundle.
	Subscribe() (<-chan struct{}, func())
}

// Config builds a Service.
type Config struct {
	TrustDomain spiffeid.TrustDomain // required
	// Attestors are the node attestation methods agents may attest with, by attestation type (e.g.
	// "join_token"); at least one is required.
	Attestors map[string]node.Attestor
	Agents    AgentStore // required
	Entries   EntryStore // required
	Changes   ChangeFeed // required
	Audit     AuditLog   // required
	CA        Authority  // required
	// AgentTTL is the lifetime of agent SVIDs; zero: the CA's default X.509-SVID TTL.
	AgentTTL time.Duration
	// Now is the clock for token expiry and certificate checks; zero: time.Now.
	Now func() time.Time
	// Logger; zero: discard.
	Logger *slog.Logger
	// OnIssue observes each workload SVID issued ("x509" or "jwt") and how long it took; zero: nothing.
	OnIssue func(kind string, took time.Duration)
	// Authz gives the grants, modes and labels agents enforce with; zero: agents get none.
	Authz AuthzSource
	// Policy gives the active custom policy bundle; zero: none.
	Policy PolicySource
	// Reports records the policy revision agents enforce; zero: reports are dropped.
	Reports PolicyReports
	// Bundles gives the federated trust domains' bundles agents hand to the workloads that federate with
	// them; zero: agents get none.
	Bundles BundleLister
}

// BundleLister lists the federated bundles (store.Federations).
type BundleLister interface {
	ListBundles(ctx context.Context) ([]store.FederatedBundle, error)
}

// MaxBatch is the most CSRs one SignX509SVIDs call may carry.
const MaxBatch = 500

// Service implements agentv1.AgentServiceServer.
type Service struct {
	agentv1.UnimplementedAgentServiceServer
	cfg Config

	mu        sync.Mutex
	connected map[spiffeid.ID]int   // agent → open Sync streams
	acks      map[spiffeid.ID]int64 // agent → the authorization revision it reported enforcing
	activity  map[spiffeid.ID]*agentActivity
}

var _ agentv1.AgentServiceServer = (*Service)(nil)

// New validates cfg and returns the service.
func New(cfg Config) (*Service, error) {
	if cfg.TrustDomain.IsZero() || len(cfg.Attestors) == 0 || cfg.Agents == nil || cfg.Entries == nil ||
		cfg.Changes == nil || cfg.Audit == nil || cfg.CA == nil {
		return nil, errors.New("agentapi: trust domain, node attestors, stores, audit log and CA are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.OnIssue == nil {
		cfg.OnIssue = func(string, time.Duration) {}
	}
	return &Service{cfg: cfg, connected: make(map[spiffeid.ID]int)}, nil
}

// Connected reports whether the agent holds at least one Sync stream now.
func (s *Service) Connected(id spiffeid.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connected[id] > 0
}

func (s *Service) connect(id spiffeid.ID) func() {
	s.mu.Lock()
	s.connected[id]++
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.connected[id]--; s.connected[id] <= 0 {
			delete(s.connected, id)
		}
	}
}

// caller authenticates the agent calling ctx's RPC: its TLS peer certificate must be a valid agent SVID of
// the trust domain, for an agent that exists, is not evicted, and currently holds that very certificate
// (by serial number). Every error is PermissionDenied with a message that says what to do.
func (s *Service) caller(ctx context.Context) (store.Agent, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return store.Agent{}, apierr.Denied("no peer information: call the agent API over mTLS with the agent SVID")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return store.Agent{}, apierr.Denied("no client certificate: call with the agent SVID over mTLS (only Attest works without one)")
	}
	certs := info.State.PeerCertificates
	bundle := x509bundle.FromX509Authorities(s.cfg.TrustDomain, s.cfg.CA.Bundle().X509Authorities())
	id, _, err := x509svid.Verify(certs, bundle, x509svid.WithTime(s.cfg.Now()))
	if err != nil {
		return store.Agent{}, apierr.Denied(fmt.Sprintf("client certificate is not a valid svid of %s: %v", s.cfg.TrustDomain, err))
	}
	if id.TrustDomain() != s.cfg.TrustDomain || !node.IsAgentID(id) {
		return store.Agent{}, apierr.Denied(fmt.Sprintf("%s is not an agent: only agent SVIDs (under %s) may call the agent API", id, node.AgentPath))
	}
	a, err := s.cfg.Agents.GetAgent(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.Agent{}, apierr.Denied(fmt.Sprintf("agent %s is not known to this server: it must attest again with a new join token", id))
	case err != nil:
		return store.Agent{}, fmt.Errorf("authenticate agent %s: %w", id, err)
	case a.Evicted:
		return store.Agent{}, evicted(id)
	}
	if serial := certs[0].SerialNumber.Text(16); serial != a.SerialNumber {
		return store.Agent{}, apierr.Denied(fmt.Sprintf("agent %s presented svid serial %s but holds %s: use the newest agent svid, or attest again", id, serial, a.SerialNumber))
	}
	return a, nil
}

func evicted(id spiffeid.ID) error {
	return apierr.Denied(fmt.Sprintf("agent %s was evicted: it must attest again with a new join token (a token with the same name gives it the same agent ID)", id))
}

// Attest verifies the agent's attestation with the node attestor of its attestation type and returns the
// agent's first SVID and the bundle. The attestor's commit (for a join token: redeeming it and recording
// the agent with the new SVID's serial, in one store transaction) runs only once the CSR has been signed,
// so a bad CSR does not burn a one-time credential. A refusal is audited and the caller is not told why.
func (s *Service) Attest(ctx context.Context, req *agentv1.AttestRequest) (*agentv1.AttestResponse, error) {
	typ := req.GetAttestationType()
	attestor, ok := s.cfg.Attestors[typ]
	if !ok {
		return nil, apierr.Invalid(fmt.Sprintf("attestation type %q is not supported: use %s", typ, s.supported()))
	}
	if len(req.GetPayload()) == 0 {
		return nil, apierr.Invalid("payload is required: " + attestor.PayloadName())
	}
	if len(req.GetCsr()) == 0 {
		return nil, apierr.Invalid("csr is required: the agent makes its key and sends a PKCS#10 request")
	}
	csr, err := x509.ParseCertificateRequest(req.GetCsr())
	if err != nil {
		return nil, apierr.Invalid(fmt.Sprintf("csr is not a valid DER PKCS#10 request: %v", err))
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, apierr.Invalid(fmt.Sprintf("csr signature is invalid: %v", err))
	}

	res, err := attestor.Attest(ctx, req.GetPayload(), noChallenge)
	var refusal *node.Refusal
	switch {
	case errors.As(err, &refusal):
		return nil, s.refuse(ctx, refusal)
	case errors.Is(err, node.ErrNoChallenge):
		return nil, status.Error(codes.Unimplemented, fmt.Sprintf("attestation type %q needs a challenge round trip, which this server's attest call does not carry: %v", typ, err))
	case err != nil:
		return nil, fmt.Errorf("attest: %w", err)
	}
	id := res.AgentID
	if id.TrustDomain() != s.cfg.TrustDomain || !node.IsAgentID(id) {
		return nil, fmt.Errorf("attest: %s attestor returned %s, not an agent id of %s", typ, id, s.cfg.TrustDomain)
	}
	if err := s.checkBan(ctx, id, res.Attrs); err != nil {
		return nil, err
	}
	chain, err := s.cfg.CA.SignX509SVID(ctx, ca.X509SVIDRequest{ID: id, CSR: req.GetCsr(), TTL: s.cfg.AgentTTL})
	if err != nil {
		return nil, fmt.Errorf("attest agent %s: %w", id, err)
	}
	agent := node.Agent{
		ID:              id,
		AttestationType: typ,
		Selectors:       attestation.Normalize(res.Selectors),
		SerialNumber:    chain[0].SerialNumber.Text(16),
		ExpiresAt:       chain[0].NotAfter,
	}
	if err := s.commit(ctx, res, agent); err != nil {
		if errors.As(err, &refusal) {
			return nil, s.refuse(ctx, refusal)
		}
		return nil, fmt.Errorf("attest agent %s: %w", id, err)
	}
	b, err := bundleProto(s.cfg.CA.Bundle())
	if err != nil {
		return nil, err
	}
	args := []any{"agent_id", id.String()}
	for _, a := range res.Attrs {
		args = append(args, a.Key, a.Value)
	}
	s.cfg.Logger.Info("agent attested", append(args, "serial", agent.SerialNumber)...)
	return &agentv1.AttestResponse{SvidChain: rawChain(chain), Bundle: b, AgentId: id.String()}, nil
}

// checkBan refuses, like any refused attestation, an agent ID an operator banned (kith agents ban). The
// attestor has not redeemed anything yet: a join token presented by a banned agent stays unused.
func (s *Service) checkBan(ctx context.Context, id spiffeid.ID, attrs []node.Attr) error {
	a, err := s.cfg.Agents.GetAgent(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("attest agent %s: %w", id, err)
	case a.Banned:
		return s.refuse(ctx, &node.Refusal{Reason: "agent is banned", Attrs: append([]node.Attr{{Key: "agent_id", Value: id.String()}}, attrs...)})
	}
	return nil
}

// noChallenge is the challenge round trip of the unary Attest call: there is none.
func noChallenge(context.Context, []byte) ([]byte, error) { return nil, node.ErrNoChallenge }

// commit records the attested agent: through the attestor's own commit when it has one, else as is.
func (s *Service) commit(ctx context.Context, res node.Result, a node.Agent) error {
	if res.Commit != nil {
		return res.Commit(ctx, a)
	}
	_, err := s.cfg.Agents.UpsertAgent(ctx, "agent:"+a.ID.String(), "agent.attest", store.Agent{
		ID: a.ID, AttestationType: a.AttestationType, Selectors: a.Selectors, SerialNumber: a.SerialNumber, ExpiresAt: a.ExpiresAt,
	})
	return err
}

// supported lists the attestation types agents may use, for the error an unknown type gets.
func (s *Service) supported() string {
	types := slices.Sorted(maps.Keys(s.cfg.Attestors))
	if len(types) == 1 {
		return strconv.Quote(types[0])
	}
	for i, t := range types {
		types[i] = strconv.Quote(t)
	}
	return "one of " + strings.Join(types, ", ")
}

// refuse audits a refused attestation and returns the error the caller sees, which never says why.
func (s *Service) refuse(ctx context.Context, r *node.Refusal) error {
	addr := "unknown"
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		addr = p.Addr.String()
	}
	detail := map[string]any{"reason": r.Reason}
	args := []any{"peer", addr, "reason", r.Reason}
	for _, a := range r.Attrs {
		if a.Value != "" {
			detail[a.Key] = a.Value
		}
		args = append(args, a.Key, a.Value)
	}
	if err := s.cfg.Audit.Audit(ctx, "agent:unauthenticated", "agent.attest.refused", addr, detail); err != nil {
		s.cfg.Logger.Error("audit refused attestation", "error", err)
	}
	s.cfg.Logger.Warn("attestation refused", args...)
	return store.ErrTokenInvalid
}

// RenewAgent signs a new SVID for the calling agent from its CSR and records the new serial. From then on
// only the new certificate is accepted: the agent must reconnect (its Sync stream included) with it. An
// open Sync stream is not cut by the renewal.
func (s *Service) RenewAgent(ctx context.Context, req *agentv1.RenewAgentRequest) (*agentv1.RenewAgentResponse, error) {
	a, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	if len(req.GetCsr()) == 0 {
		return nil, apierr.Invalid("csr is required: the agent makes a new key and sends a PKCS#10 request")
	}
	chain, err := s.cfg.CA.SignX509SVID(ctx, ca.X509SVIDRequest{ID: a.ID, CSR: req.GetCsr(), TTL: s.cfg.AgentTTL})
	if err != nil {
		return nil, fmt.Errorf("renew agent %s: %w", a.ID, err)
	}
	a.SerialNumber, a.ExpiresAt = chain[0].SerialNumber.Text(16), chain[0].NotAfter
	if _, err := s.cfg.Agents.UpsertAgent(ctx, "agent:"+a.ID.String(), "agent.renew", a); err != nil {
		return nil, fmt.Errorf("renew agent %s: %w", a.ID, err)
	}
	b, err := bundleProto(s.cfg.CA.Bundle())
	if err != nil {
		return nil, err
	}
	s.cfg.Logger.Debug("agent svid renewed", "agent_id", a.ID.String(), "serial", a.SerialNumber)
	return &agentv1.RenewAgentResponse{SvidChain: rawChain(chain), Bundle: b}, nil
}

func rawChain(chain []*x509.Certificate) [][]byte {
	out := make([][]byte, len(chain))
	for i, c := range chain {
		out[i] = c.Raw
	}
	return out
}

func bundleProto(b *spiffebundle.Bundle) (*agentv1.Bundle, error) {
	doc, err := b.Marshal()
	if err != nil {
		return nil, fmt.Errorf("marshal bundle: %w", err)
	}
	seq, _ := b.SequenceNumber()
	return &agentv1.Bundle{TrustDomain: b.TrustDomain().Name(), SpiffeBundle: doc, SequenceNumber: seq}, nil
}

// serves reports whether the agent serves the entry: it is the entry's parent, or the entry has node
// selectors and the agent's attested selectors include them all.
func serves(a store.Agent, sels attestation.Set, e store.Entry) bool {
	if e.ParentID == a.ID {
		return true
	}
	return len(e.NodeSelectors) > 0 && sels.ContainsAll(e.NodeSelectors)
}

func entryProto(e store.Entry) *agentv1.Entry {
	return &agentv1.Entry{
		Id:             e.ID,
		SpiffeId:       e.SPIFFEID.String(),
		Selectors:      attestation.Strings(e.Selectors),
		X509TtlSeconds: int64(e.X509TTL / time.Second),
		JwtTtlSeconds:  int64(e.JWTTTL / time.Second),
		DnsNames:       e.DNSNames,
		Labels:         e.Labels,
		Revision:       e.Revision,
		FederatesWith:  trustDomainNames(e.FederatesWith),
	}
}

func trustDomainNames(tds []spiffeid.TrustDomain) []string {
	var out []string
	for _, td := range tds {
		out = append(out, td.Name())
	}
	return out
}

// federatedBundles is every federated bundle, for a Sync message.
func (s *Service) federatedBundles(ctx context.Context) (*agentv1.FederatedBundles, error) {
	out := &agentv1.FederatedBundles{}
	if s.cfg.Bundles == nil {
		return out, nil
	}
	bs, err := s.cfg.Bundles.ListBundles(ctx)
	if err != nil {
		return nil, fmt.Errorf("federated bundles: %w", err)
	}
	for _, b := range bs {
		out.Bundles = append(out.Bundles, &agentv1.Bundle{TrustDomain: b.TrustDomain.Name(), SpiffeBundle: b.Bundle, SequenceNumber: b.Sequence})
	}
	return out, nil
}
