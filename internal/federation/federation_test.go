package federation_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	kfed "github.com/kithid/kith/internal/federation"
	"github.com/kithid/kith/internal/store"
	"github.com/kithid/kith/internal/store/sqlite"
)

var partner = spiffeid.RequireTrustDomainFromString("partner.test")

func newRoot(t *testing.T, n int64) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(n), Subject: pkix.Name{CommonName: "root"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func bundleWith(t *testing.T, seq uint64, hint time.Duration, roots ...*x509.Certificate) *spiffebundle.Bundle {
	b := spiffebundle.FromX509Authorities(partner, roots)
	b.SetSequenceNumber(seq)
	b.SetRefreshHint(hint)
	return b
}

type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

// The refresher fetches a relationship when it is created and then by the bundle's refresh hint; a changed
// bundle is stored, an unchanged one is not; a failure keeps the last good bundle, records the error and
// retries sooner.
func TestRefresherKeepsTheLastGoodBundle(t *testing.T) {
	ctx := context.Background()
	clk := &clock{now: time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)}
	st, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "kith.db"), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	root1, root2 := newRoot(t, 1), newRoot(t, 2)
	first := bundleWith(t, 1, 10*time.Second, root1)
	doc, _ := first.Marshal()
	if _, err := st.PutFederation(ctx, "test", true, store.Federation{TrustDomain: partner, BundleEndpointURL: "https://partner.test",
		Profile: store.ProfileHTTPSSPIFFE, EndpointSPIFFEID: spiffeid.RequireFromString("spiffe://partner.test/kith/server")},
		&store.FederatedBundle{TrustDomain: partner, Bundle: doc, Source: store.BundleFederation, Sequence: 1}); err != nil {
		t.Fatal(err)
	}
	var serve *spiffebundle.Bundle
	var fail error
	fetches := 0
	r, err := kfed.NewRefresher(kfed.RefresherConfig{Store: st, Now: clk.Now, Retry: 3 * time.Second,
		Fetch: func(_ context.Context, td spiffeid.TrustDomain, url string, _ ...federation.FetchOption) (*spiffebundle.Bundle, error) {
			fetches++
			if fail != nil {
				return nil, fail
			}
			return serve, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	status := func() store.FederationStatus {
		fs, err := st.ListFederations(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return fs[0].Status
	}
	roots := func() int {
		bs, _ := st.ListBundles(ctx)
		b, err := spiffebundle.Parse(partner, bs[0].Bundle)
		if err != nil {
			t.Fatal(err)
		}
		return len(b.X509Authorities())
	}

	serve = bundleWith(t, 2, 10*time.Second, root1, root2)
	next, err := r.Tick(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fetches != 1 || roots() != 2 || !next.Equal(clk.now.Add(10*time.Second)) || status().LastError != "" {
		t.Fatalf("first tick: %d fetches, %d roots, next %v, status %+v; want 1, 2, in 10s, no error", fetches, roots(), next, status())
	}
	rev, _ := st.Revision(ctx)

	clk.now = clk.now.Add(5 * time.Second)
	if _, err := r.Tick(ctx); err != nil || fetches != 1 {
		t.Fatalf("a tick before the hint fetched (%d fetches, %v)", fetches, err)
	}
	clk.now = clk.now.Add(5 * time.Second)
	if _, err := r.Tick(ctx); err != nil || fetches != 2 {
		t.Fatalf("a tick at the hint did not fetch (%d fetches, %v)", fetches, err)
	}
	if after, _ := st.Revision(ctx); after != rev {
		t.Errorf("an unchanged bundle was written again (revision %d → %d)", rev, after)
	}

	fail = errors.New("connection refused")
	clk.now = clk.now.Add(10 * time.Second)
	next, err = r.Tick(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s := status(); s.LastError == "" || roots() != 2 || !next.Equal(clk.now.Add(3*time.Second)) {
		t.Errorf("after a failure: status %+v, %d roots, next %v; want the error, the last good 2 roots, a retry in 3s", s, roots(), next)
	}
	fail = nil
	serve = spiffebundle.New(partner)
	clk.now = clk.now.Add(3 * time.Second)
	if _, err := r.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if s := status(); s.LastError == "" || roots() != 2 {
		t.Errorf("an empty bundle was taken: status %+v, %d roots", s, roots())
	}
}

type source struct{ b *spiffebundle.Bundle }

func (s source) Bundle() *spiffebundle.Bundle { return s.b.Clone() }

// The bundle endpoint serves the bundle with its sequence number and the configured refresh hint, and
// answers a poll that names the current ETag with 304 and no body.
func TestEndpointServesETags(t *testing.T) {
	b := bundleWith(t, 7, time.Hour, newRoot(t, 1))
	h, err := kfed.NewEndpointHandler(kfed.EndpointConfig{TrustDomain: partner, Source: source{b}, RefreshHint: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	got, err := spiffebundle.Read(partner, resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	seq, _ := got.SequenceNumber()
	hint, _ := got.RefreshHint()
	tag := resp.Header.Get("ETag")
	if seq != 7 || hint != 2*time.Second || tag == "" {
		t.Fatalf("served sequence %d, hint %s, ETag %q; want 7, 2s and a tag", seq, hint, tag)
	}
	for _, tc := range []struct {
		name, ifNoneMatch string
		want              int
	}{
		{"the current tag is not modified", tag, http.StatusNotModified},
		{"another tag gets the bundle", `"other"`, http.StatusOK},
		{"a weak current tag is not modified", "W/" + tag, http.StatusNotModified},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
			req.Header.Set("If-None-Match", tc.ifNoneMatch)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}
