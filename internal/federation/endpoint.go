package federation

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// BundleSource is where the endpoint takes the bundle it serves (the CA): a fresh copy on each call.
type BundleSource interface {
	Bundle() *spiffebundle.Bundle
}

// EndpointConfig configures NewEndpointHandler.
type EndpointConfig struct {
	TrustDomain spiffeid.TrustDomain // required
	Source      BundleSource         // required
	// RefreshHint replaces the bundle's own refresh hint in what is served. Zero: the bundle's.
	RefreshHint time.Duration
}

// NewEndpointHandler returns the bundle endpoint's HTTP handler: go-spiffe's federation handler serving the
// current bundle (with its sequence number and refresh hint), behind an ETag made of the trust domain,
// sequence number and refresh hint. A GET whose If-None-Match names the current ETag gets 304 Not Modified
// without the bundle being marshalled.
func NewEndpointHandler(cfg EndpointConfig) (http.Handler, error) {
	if cfg.TrustDomain.IsZero() || cfg.Source == nil {
		return nil, fmt.Errorf("bundle endpoint: trust domain and bundle source are required")
	}
	src := hinted{td: cfg.TrustDomain, src: cfg.Source, hint: cfg.RefreshHint}
	h, err := federation.NewHandler(cfg.TrustDomain, &src)
	if err != nil {
		return nil, fmt.Errorf("bundle endpoint: %w", err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			h.ServeHTTP(w, r) // refuses it
			return
		}
		b := src.current()
		tag := etag(b)
		w.Header().Set("ETag", tag)
		w.Header().Set("Cache-Control", "no-cache")
		if matches(r.Header.Get("If-None-Match"), tag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		// The handler reads the bundle again: should it have changed in between, the body is the newer one
		// and the ETag the older, so the next poll fetches it again rather than missing a change.
		h.ServeHTTP(w, r)
	}), nil
}

// ETag returns the entity tag the endpoint gives b: quoted, from its trust domain, sequence number and
// refresh hint, which change whenever its keys do.
func ETag(b *spiffebundle.Bundle) string { return etag(b) }

func etag(b *spiffebundle.Bundle) string {
	seq, _ := b.SequenceNumber()
	hint, _ := b.RefreshHint()
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%d\x00%d\x00%d\x00%d", b.TrustDomain(), seq, hint, len(b.X509Authorities()), len(b.JWTAuthorities())))
	return `"` + hex.EncodeToString(sum[:12]) + `"`
}

func matches(header, tag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == tag {
			return true
		}
	}
	return false
}

// hinted is the spiffebundle.Source the go-spiffe handler reads: the bundle the request was tagged with,
// with the configured refresh hint.
type hinted struct {
	td   spiffeid.TrustDomain
	src  BundleSource
	hint time.Duration
}

func (h *hinted) current() *spiffebundle.Bundle {
	b := h.src.Bundle()
	if h.hint > 0 {
		b.SetRefreshHint(h.hint)
	}
	return b
}

// GetBundleForTrustDomain implements spiffebundle.Source.
func (h *hinted) GetBundleForTrustDomain(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	if td != h.td {
		return nil, fmt.Errorf("no bundle for trust domain %q", td)
	}
	return h.current(), nil
}
