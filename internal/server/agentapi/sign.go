package agentapi

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/node"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/internal/server/apierr"
	"github.com/kithid/kith/internal/store"
)

// SignX509SVIDs signs a batch of workload CSRs, each for an entry the calling agent serves. A request that
// fails (an entry this agent does not serve, a bad CSR) gets an error in its result; the others are signed.
func (s *Service) SignX509SVIDs(ctx context.Context, req *agentv1.SignX509SVIDsRequest) (*agentv1.SignX509SVIDsResponse, error) {
	a, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	if n := len(req.GetRequests()); n > MaxBatch {
		return nil, apierr.Invalid(fmt.Sprintf("%d csrs in one batch; send at most %d per call", n, MaxBatch))
	}
	sels := attestation.NewSet(a.Selectors...)
	resp := &agentv1.SignX509SVIDsResponse{Results: make([]*agentv1.X509SVIDResult, 0, len(req.GetRequests()))}
	for _, r := range req.GetRequests() {
		res := &agentv1.X509SVIDResult{EntryId: r.GetEntryId()}
		resp.Results = append(resp.Results, res)
		start := time.Now()
		e, err := s.servedEntry(ctx, a, sels, r.GetEntryId())
		if err != nil {
			res.Error = err.Error()
			continue
		}
		chain, err := s.cfg.CA.SignX509SVID(ctx, ca.X509SVIDRequest{ID: e.SPIFFEID, CSR: r.GetCsr(), DNSNames: e.DNSNames, TTL: e.X509TTL})
		if err != nil {
			if !errors.Is(err, ca.ErrInvalidRequest) {
				s.cfg.Logger.Error("sign x509-svid for agent", "agent_id", a.ID.String(), "entry_id", e.ID, "error", err)
			}
			res.Error = fmt.Sprintf("entry %s: %v", e.ID, err)
			continue
		}
		res.CertChain, res.ExpiresAt = rawChain(chain), timestamppb.New(chain[0].NotAfter)
		s.cfg.OnIssue("x509", time.Since(start))
	}
	return resp, nil
}

// MintJWTSVID signs a JWT-SVID for an entry the calling agent serves.
func (s *Service) MintJWTSVID(ctx context.Context, req *agentv1.MintJWTSVIDRequest) (*agentv1.MintJWTSVIDResponse, error) {
	a, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	// Checked before the entry is read, so a bad request costs no store lookup; the CA checks again.
	if err := ca.CheckAudience(req.GetAudience()); err != nil {
		return nil, err
	}
	e, err := s.servedEntry(ctx, a, attestation.NewSet(a.Selectors...), req.GetEntryId())
	if err != nil {
		return nil, err
	}
	tok, exp, err := s.cfg.CA.SignJWTSVID(ctx, e.SPIFFEID, req.GetAudience(), e.JWTTTL)
	if err != nil {
		return nil, fmt.Errorf("mint jwt-svid for entry %s: %w", e.ID, err)
	}
	s.cfg.OnIssue("jwt", time.Since(start))
	return &agentv1.MintJWTSVIDResponse{Token: tok, ExpiresAt: timestamppb.New(exp)}, nil
}

// servedEntry returns the entry if the agent serves it. An unknown entry gets the same PermissionDenied as
// another agent's, so an agent cannot probe which entries exist.
func (s *Service) servedEntry(ctx context.Context, a store.Agent, sels attestation.Set, id string) (store.Entry, error) {
	if id == "" {
		return store.Entry{}, apierr.Invalid("entry_id is required")
	}
	e, err := s.cfg.Entries.GetEntry(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.Entry{}, notServed(id)
	case err != nil:
		return store.Entry{}, fmt.Errorf("read entry %s: %w", id, err)
	case !serves(a, sels, e):
		return store.Entry{}, notServed(id)
	case strings.HasPrefix(e.SPIFFEID.Path()+"/", node.ReservedPath):
		// Entries are validated against this at creation; refuse anyway so no workload can become an agent.
		return store.Entry{}, apierr.Denied(fmt.Sprintf("entry %s names %s under the reserved path %s", id, e.SPIFFEID, node.ReservedPath))
	}
	return e, nil
}

func notServed(id string) error {
	return apierr.Denied(fmt.Sprintf("entry %s is not served by this agent", id))
}
