package adminapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/internal/server/apierr"
	"github.com/kithid/kith/internal/store"
	"github.com/kithid/kith/logclip"
)

// FederationStore keeps federated bundles and federation relationships (store.Federations).
type FederationStore interface {
	PutBundle(ctx context.Context, actor, action string, b store.FederatedBundle) (store.FederatedBundle, error)
	DeleteBundle(ctx context.Context, actor string, td spiffeid.TrustDomain) (store.FederatedBundle, error)
	ListBundles(ctx context.Context) ([]store.FederatedBundle, error)
	PutFederation(ctx context.Context, actor string, create bool, f store.Federation, first *store.FederatedBundle) (store.Federation, error)
	DeleteFederation(ctx context.Context, actor string, td spiffeid.TrustDomain) (store.Federation, error)
	ListFederations(ctx context.Context) ([]store.Federation, error)
}

// MaxBundleSize bounds a bundle given by an administrator.
const MaxBundleSize = 1 << 20

func (s *Service) federations() (FederationStore, error) {
	if s.cfg.Federations == nil {
		return nil, apierr.Invalid("this server keeps no federated bundles")
	}
	return s.cfg.Federations, nil
}

// ParseBundle reads another trust domain's bundle given by an administrator: a SPIFFE bundle (JSON) or PEM
// X.509 roots. It must hold at least one X.509 root or JWT key.
func ParseBundle(td spiffeid.TrustDomain, field string, doc []byte) (*spiffebundle.Bundle, error) {
	if len(doc) > MaxBundleSize {
		return nil, apierr.Invalid(fmt.Sprintf("%s is %d bytes: at most %d", field, len(doc), MaxBundleSize))
	}
	var (
		b   *spiffebundle.Bundle
		err error
	)
	if t := bytes.TrimSpace(doc); len(t) > 0 && t[0] == '{' {
		b, err = spiffebundle.Parse(td, doc)
	} else {
		var xb *x509bundle.Bundle
		if xb, err = x509bundle.Parse(td, doc); err == nil {
			b = spiffebundle.FromX509Bundle(xb)
		}
	}
	if err != nil {
		return nil, apierr.Invalid(fmt.Sprintf("%s is neither a SPIFFE bundle (JSON) nor PEM certificates for %s: %v", field, td, err))
	}
	if b.Empty() {
		return nil, apierr.Invalid(fmt.Sprintf("%s holds no X.509 root and no JWT key for %s", field, td))
	}
	return b, nil
}

func storedBundle(td spiffeid.TrustDomain, source string, b *spiffebundle.Bundle) (store.FederatedBundle, error) {
	doc, err := b.Marshal()
	if err != nil {
		return store.FederatedBundle{}, fmt.Errorf("marshal bundle of %s: %w", td, err)
	}
	seq, _ := b.SequenceNumber()
	return store.FederatedBundle{TrustDomain: td, Bundle: doc, Source: source, Sequence: seq}, nil
}

// FederatedBundleProto describes a stored bundle for the API.
func FederatedBundleProto(fb store.FederatedBundle) *adminv1.FederatedBundle {
	out := &adminv1.FederatedBundle{TrustDomain: fb.TrustDomain.Name(), SpiffeBundle: fb.Bundle, Source: fb.Source,
		SequenceNumber: fb.Sequence, UpdatedAt: ts(fb.UpdatedAt)}
	if b, err := spiffebundle.Parse(fb.TrustDomain, fb.Bundle); err == nil {
		for _, c := range b.X509Authorities() {
			out.X509Authorities = append(out.X509Authorities, c.Raw)
		}
		for kid := range b.JWTAuthorities() {
			out.JwtKeyIds = append(out.JwtKeyIds, kid)
		}
		if h, ok := b.RefreshHint(); ok {
			out.RefreshHintSeconds = int64(h / time.Second)
		}
	}
	return out
}

func (s *Service) trustDomainArg(field, name string) (spiffeid.TrustDomain, error) {
	td, err := ParseTrustDomain(field, name)
	if err != nil {
		return td, err
	}
	if td == s.cfg.TrustDomain {
		return td, apierr.Invalid(fmt.Sprintf("%s %q is this server's own trust domain: its bundle is the CA's (kith bundle show)", field, name))
	}
	return td, nil
}

// SetFederatedBundle stores a bundle set by hand.
func (s *Service) SetFederatedBundle(ctx context.Context, req *adminv1.SetFederatedBundleRequest) (*adminv1.SetFederatedBundleResponse, error) {
	fs, err := s.federations()
	if err != nil {
		return nil, err
	}
	td, err := s.trustDomainArg("trust_domain", req.GetTrustDomain())
	if err != nil {
		return nil, err
	}
	b, err := ParseBundle(td, "bundle", req.GetSpiffeBundle())
	if err != nil {
		return nil, err
	}
	sb, err := storedBundle(td, store.BundleManual, b)
	if err != nil {
		return nil, err
	}
	out, err := fs.PutBundle(ctx, s.cfg.Actor(ctx), "bundle.set", sb)
	if err != nil {
		return nil, err
	}
	return &adminv1.SetFederatedBundleResponse{Bundle: FederatedBundleProto(out)}, nil
}

// ListFederatedBundles lists the bundles of other trust domains.
func (s *Service) ListFederatedBundles(ctx context.Context, _ *adminv1.ListFederatedBundlesRequest) (*adminv1.ListFederatedBundlesResponse, error) {
	fs, err := s.federations()
	if err != nil {
		return nil, err
	}
	bs, err := fs.ListBundles(ctx)
	if err != nil {
		return nil, err
	}
	resp := &adminv1.ListFederatedBundlesResponse{}
	for _, b := range bs {
		resp.Bundles = append(resp.Bundles, FederatedBundleProto(b))
	}
	return resp, nil
}

// DeleteFederatedBundle deletes a bundle: the server stops trusting that trust domain.
func (s *Service) DeleteFederatedBundle(ctx context.Context, req *adminv1.DeleteFederatedBundleRequest) (*adminv1.DeleteFederatedBundleResponse, error) {
	fs, err := s.federations()
	if err != nil {
		return nil, err
	}
	td, err := s.trustDomainArg("trust_domain", req.GetTrustDomain())
	if err != nil {
		return nil, err
	}
	old, err := fs.DeleteBundle(ctx, s.cfg.Actor(ctx), td)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("no bundle for %s: see kith bundle list: %w", td, err)
	}
	if err != nil {
		return nil, err
	}
	return &adminv1.DeleteFederatedBundleResponse{Bundle: FederatedBundleProto(old)}, nil
}

// federationFromProto validates a relationship given by an administrator.
func (s *Service) federationFromProto(pf *adminv1.Federation) (store.Federation, error) {
	if pf == nil {
		return store.Federation{}, apierr.Invalid("federation is required")
	}
	td, err := s.trustDomainArg("trust_domain", pf.GetTrustDomain())
	if err != nil {
		return store.Federation{}, err
	}
	f := store.Federation{TrustDomain: td, BundleEndpointURL: pf.GetBundleEndpointUrl(), Profile: pf.GetProfile()}
	u, err := url.Parse(f.BundleEndpointURL)
	if err != nil || u.Scheme != "https" || u.Host == "" || len(f.BundleEndpointURL) > 2048 {
		return store.Federation{}, apierr.Invalid(fmt.Sprintf("bundle_endpoint_url %q: give the https:// URL of %s's bundle endpoint", logclip.Cut(f.BundleEndpointURL, 100), td))
	}
	switch f.Profile {
	case store.ProfileHTTPSSPIFFE:
		if pf.GetEndpointSpiffeId() == "" {
			return store.Federation{}, apierr.Invalid(fmt.Sprintf("profile https_spiffe needs endpoint_spiffe_id: the SPIFFE ID the endpoint server presents, such as spiffe://%s/kith/server", td))
		}
		if f.EndpointSPIFFEID, err = spiffeid.FromString(pf.GetEndpointSpiffeId()); err != nil {
			return store.Federation{}, apierr.Invalid(fmt.Sprintf("endpoint_spiffe_id %q is not a SPIFFE ID: %v", logclip.Cut(pf.GetEndpointSpiffeId(), 100), err))
		}
	case store.ProfileHTTPSWeb:
		if pf.GetEndpointSpiffeId() != "" {
			return store.Federation{}, apierr.Invalid("endpoint_spiffe_id is for profile https_spiffe: an https_web endpoint is checked against the system's Web PKI roots")
		}
	default:
		return store.Federation{}, apierr.Invalid(fmt.Sprintf("profile %q: use https_spiffe or https_web", logclip.Cut(f.Profile, 50)))
	}
	return f, nil
}

func (s *Service) federationProto(ctx context.Context, f store.Federation) *adminv1.Federation {
	pf := &adminv1.Federation{TrustDomain: f.TrustDomain.Name(), BundleEndpointUrl: f.BundleEndpointURL, Profile: f.Profile,
		CreatedAt: ts(f.CreatedAt), UpdatedAt: ts(f.UpdatedAt), LastRefresh: ts(f.Status.LastRefresh),
		NextRefresh: ts(f.Status.NextRefresh), LastError: f.Status.LastError}
	if !f.EndpointSPIFFEID.IsZero() {
		pf.EndpointSpiffeId = f.EndpointSPIFFEID.String()
	}
	if bs, err := s.cfg.Federations.ListBundles(ctx); err == nil {
		for _, b := range bs {
			if b.TrustDomain == f.TrustDomain {
				pf.Bundle = FederatedBundleProto(b)
			}
		}
	}
	return pf
}

func (s *Service) putFederation(ctx context.Context, create bool, pf *adminv1.Federation, trustBundle []byte) (*adminv1.Federation, error) {
	fs, err := s.federations()
	if err != nil {
		return nil, err
	}
	f, err := s.federationFromProto(pf)
	if err != nil {
		return nil, err
	}
	var first *store.FederatedBundle
	if len(trustBundle) > 0 {
		b, err := ParseBundle(f.TrustDomain, "trust_bundle", trustBundle)
		if err != nil {
			return nil, err
		}
		sb, err := storedBundle(f.TrustDomain, store.BundleFederation, b)
		if err != nil {
			return nil, err
		}
		first = &sb
	} else if create && f.Profile == store.ProfileHTTPSSPIFFE {
		// The endpoint's certificate is checked against the trust domain's own bundle: without one the
		// first fetch cannot succeed.
		bs, err := fs.ListBundles(ctx)
		if err != nil {
			return nil, err
		}
		known := false
		for _, b := range bs {
			known = known || b.TrustDomain == f.TrustDomain
		}
		if !known {
			return nil, apierr.Invalid(fmt.Sprintf("profile https_spiffe needs %s's bundle to check its endpoint: give --trust-bundle (from kith bundle show --format spiffe on its server) or set it first with kith bundle set", f.TrustDomain))
		}
	}
	out, err := fs.PutFederation(ctx, s.cfg.Actor(ctx), create, f, first)
	switch {
	case errors.Is(err, store.ErrAlreadyExists):
		return nil, fmt.Errorf("a federation with %s exists: change it with kith federation update: %w", f.TrustDomain, err)
	case errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("no federation with %s: create it with kith federation create: %w", f.TrustDomain, err)
	case err != nil:
		return nil, err
	}
	return s.federationProto(ctx, out), nil
}

// CreateFederation starts a relationship; the server fetches the bundle at once and then by its refresh hint.
func (s *Service) CreateFederation(ctx context.Context, req *adminv1.CreateFederationRequest) (*adminv1.CreateFederationResponse, error) {
	f, err := s.putFederation(ctx, true, req.GetFederation(), req.GetTrustBundle())
	if err != nil {
		return nil, err
	}
	return &adminv1.CreateFederationResponse{Federation: f}, nil
}

// UpdateFederation replaces a relationship.
func (s *Service) UpdateFederation(ctx context.Context, req *adminv1.UpdateFederationRequest) (*adminv1.UpdateFederationResponse, error) {
	f, err := s.putFederation(ctx, false, req.GetFederation(), req.GetTrustBundle())
	if err != nil {
		return nil, err
	}
	return &adminv1.UpdateFederationResponse{Federation: f}, nil
}

// ListFederations lists the relationships (or one) with their refresh status.
func (s *Service) ListFederations(ctx context.Context, req *adminv1.ListFederationsRequest) (*adminv1.ListFederationsResponse, error) {
	fs, err := s.federations()
	if err != nil {
		return nil, err
	}
	var want spiffeid.TrustDomain
	if req.GetTrustDomain() != "" {
		if want, err = ParseTrustDomain("trust_domain", req.GetTrustDomain()); err != nil {
			return nil, err
		}
	}
	all, err := fs.ListFederations(ctx)
	if err != nil {
		return nil, err
	}
	resp := &adminv1.ListFederationsResponse{}
	for _, f := range all {
		if want.IsZero() || f.TrustDomain == want {
			resp.Federations = append(resp.Federations, s.federationProto(ctx, f))
		}
	}
	if !want.IsZero() && len(resp.Federations) == 0 {
		return nil, fmt.Errorf("no federation with %s: see kith federation list: %w", want, store.ErrNotFound)
	}
	return resp, nil
}

// DeleteFederation ends a relationship; the last bundle stays until kith bundle delete.
func (s *Service) DeleteFederation(ctx context.Context, req *adminv1.DeleteFederationRequest) (*adminv1.DeleteFederationResponse, error) {
	fs, err := s.federations()
	if err != nil {
		return nil, err
	}
	td, err := s.trustDomainArg("trust_domain", req.GetTrustDomain())
	if err != nil {
		return nil, err
	}
	old, err := fs.DeleteFederation(ctx, s.cfg.Actor(ctx), td)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("no federation with %s: see kith federation list: %w", td, err)
	}
	if err != nil {
		return nil, err
	}
	return &adminv1.DeleteFederationResponse{Federation: s.federationProto(ctx, old)}, nil
}
