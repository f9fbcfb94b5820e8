package federation

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/internal/store"
)

// Store is what the refresher reads and writes.
type Store interface {
	ListFederations(ctx context.Context) ([]store.Federation, error)
	ListBundles(ctx context.Context) ([]store.FederatedBundle, error)
	PutBundle(ctx context.Context, actor, action string, b store.FederatedBundle) (store.FederatedBundle, error)
	SetFederationStatus(ctx context.Context, td spiffeid.TrustDomain, st store.FederationStatus) error
	Watch() (<-chan int64, func())
}

// FetchFunc fetches a trust domain's bundle from its endpoint: go-spiffe's federation.FetchBundle.
type FetchFunc func(ctx context.Context, td spiffeid.TrustDomain, url string, opts ...federation.FetchOption) (*spiffebundle.Bundle, error)

// Defaults of RefresherConfig.
const (
	DefaultRefresh    = 5 * time.Minute // a bundle without a refresh hint
	DefaultMinRefresh = time.Second
	DefaultMaxRefresh = time.Hour
	DefaultRetry      = 30 * time.Second
	DefaultTimeout    = 10 * time.Second
)

// RefresherConfig configures NewRefresher.
type RefresherConfig struct {
	Store Store // required
	// Fetch fetches a bundle. Zero: federation.FetchBundle.
	Fetch FetchFunc
	// WebRoots are the roots an https_web endpoint's certificate must chain to. Zero: the system's.
	WebRoots *x509.CertPool
	// MinRefresh and MaxRefresh bound the refresh hint a bundle asks for. Zero: 1s and 1h.
	MinRefresh, MaxRefresh time.Duration
	// Retry is the longest wait before fetching again after a failure (shorter when the hint is).
	// Zero: 30s.
	Retry time.Duration
	// Timeout bounds one fetch. Zero: 10s.
	Timeout time.Duration
	Now     func() time.Time // zero: time.Now
	Logger  *slog.Logger     // zero: discard
}

// Refresher keeps every federated trust domain's bundle fresh. Run it once per server.
type Refresher struct {
	cfg RefresherConfig
}

// NewRefresher validates cfg and fills its defaults.
func NewRefresher(cfg RefresherConfig) (*Refresher, error) {
	if cfg.Store == nil {
		return nil, errors.New("federation refresher: store is required")
	}
	if cfg.Fetch == nil {
		cfg.Fetch = federation.FetchBundle
	}
	if cfg.MinRefresh <= 0 {
		cfg.MinRefresh = DefaultMinRefresh
	}
	if cfg.MaxRefresh <= 0 {
		cfg.MaxRefresh = DefaultMaxRefresh
	}
	if cfg.Retry <= 0 {
		cfg.Retry = DefaultRetry
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Refresher{cfg: cfg}, nil
}

// Run refreshes each relationship when it is due, and at once when one is created or changed, until ctx is
// done.
func (r *Refresher) Run(ctx context.Context) error {
	watch, stop := r.cfg.Store.Watch()
	defer stop()
	for {
		next, err := r.Tick(ctx)
		if err != nil {
			r.cfg.Logger.Error("federation refresh", "error", err)
			next = r.cfg.Now().Add(r.cfg.Retry)
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(next.Sub(r.cfg.Now()), 0)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case _, ok := <-watch:
			t.Stop()
			if !ok {
				return nil
			}
		case <-t.C:
		}
	}
}

// Tick refreshes every relationship that is due at now (never refreshed, changed, or past its next
// refresh) and returns when the next one is due (zero: none is configured).
func (r *Refresher) Tick(ctx context.Context) (time.Time, error) {
	fs, err := r.cfg.Store.ListFederations(ctx)
	if err != nil {
		return time.Time{}, err
	}
	if len(fs) == 0 {
		return time.Time{}, nil
	}
	bundles, err := r.cfg.Store.ListBundles(ctx)
	if err != nil {
		return time.Time{}, err
	}
	byTD := make(map[spiffeid.TrustDomain]store.FederatedBundle, len(bundles))
	for _, b := range bundles {
		byTD[b.TrustDomain] = b
	}
	var next time.Time
	for _, f := range fs {
		due := f.Status.NextRefresh
		if due.IsZero() || !due.After(r.cfg.Now()) {
			st := r.refresh(ctx, f, byTD[f.TrustDomain])
			if err := r.cfg.Store.SetFederationStatus(ctx, f.TrustDomain, st); err != nil && !errors.Is(err, store.ErrNotFound) {
				return time.Time{}, err
			}
			due = st.NextRefresh
		}
		if next.IsZero() || due.Before(next) {
			next = due
		}
	}
	return next, nil
}

// refresh fetches one trust domain's bundle and stores it when it changed. A failed fetch keeps the last
// good bundle and is retried sooner than the hint asks.
func (r *Refresher) refresh(ctx context.Context, f store.Federation, cur store.FederatedBundle) store.FederationStatus {
	log := r.cfg.Logger.With("trust_domain", f.TrustDomain.Name(), "url", f.BundleEndpointURL)
	st := f.Status
	var curBundle *spiffebundle.Bundle
	if len(cur.Bundle) > 0 {
		if b, err := spiffebundle.Parse(f.TrustDomain, cur.Bundle); err == nil {
			curBundle = b
		}
	}
	hint := r.hint(curBundle)
	fail := func(err error) store.FederationStatus {
		log.Warn("federated bundle refresh failed; keeping the last good bundle", "error", err)
		st.LastError = err.Error()
		st.NextRefresh = r.cfg.Now().Add(min(hint, r.cfg.Retry))
		return st
	}
	var opt federation.FetchOption
	switch f.Profile {
	case store.ProfileHTTPSSPIFFE:
		if curBundle == nil {
			return fail(fmt.Errorf("no bundle of %s to check its endpoint's SVID with: give one with kith federation update --trust-bundle or kith bundle set", f.TrustDomain))
		}
		opt = federation.WithSPIFFEAuth(curBundle, f.EndpointSPIFFEID)
	case store.ProfileHTTPSWeb:
		roots := r.cfg.WebRoots
		if roots == nil {
			var err error
			if roots, err = x509.SystemCertPool(); err != nil {
				return fail(fmt.Errorf("system roots for https_web: %w", err))
			}
		}
		opt = federation.WithWebPKIRoots(roots)
	default:
		return fail(fmt.Errorf("unknown profile %q", f.Profile))
	}
	fctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	b, err := r.cfg.Fetch(fctx, f.TrustDomain, f.BundleEndpointURL, opt)
	if err != nil {
		return fail(err)
	}
	if b.Empty() {
		return fail(errors.New("the endpoint served a bundle without X.509 roots or JWT keys"))
	}
	if curBundle == nil || !curBundle.Equal(b) {
		doc, err := b.Marshal()
		if err != nil {
			return fail(err)
		}
		seq, _ := b.SequenceNumber()
		if _, err := r.cfg.Store.PutBundle(ctx, "federation:"+f.TrustDomain.Name(), "bundle.refresh",
			store.FederatedBundle{TrustDomain: f.TrustDomain, Bundle: doc, Source: store.BundleFederation, Sequence: seq}); err != nil {
			return fail(fmt.Errorf("store bundle: %w", err))
		}
		log.Info("federated bundle updated", "sequence", seq, "x509_roots", len(b.X509Authorities()), "jwt_keys", len(b.JWTAuthorities()))
	}
	now := r.cfg.Now()
	st.LastRefresh, st.LastError, st.NextRefresh = now, "", now.Add(r.hint(b))
	return st
}

// hint is how long to wait before the next fetch: the bundle's refresh hint, bounded.
func (r *Refresher) hint(b *spiffebundle.Bundle) time.Duration {
	h := DefaultRefresh
	if b != nil {
		if v, ok := b.RefreshHint(); ok && v > 0 {
			h = v
		}
	}
	return min(max(h, r.cfg.MinRefresh), r.cfg.MaxRefresh)
}
