package workloadapi

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/peer"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/catest"
	"github.com/kithid/kith/svid/cache"
)

var (
	td        = spiffeid.RequireTrustDomainFromString("example.org")
	webID     = spiffeid.RequireFromPath(td, "/web")
	adminID   = spiffeid.RequireFromPath(td, "/admin")
	dbID      = spiffeid.RequireFromPath(td, "/db")
	webSel    = attestation.Selector{Type: "unix", Key: "uid", Value: "1000"}
	dbSel     = attestation.Selector{Type: "unix", Key: "uid", Value: "2000"}
	strangerS = attestation.Selector{Type: "unix", Key: "uid", Value: "4242"}
)

// fakeAttestor returns the configured selectors (or error) for every caller.
type fakeAttestor struct {
	mu   sync.Mutex
	sels []attestation.Selector
	err  error
	pids []int32
}

func (a *fakeAttestor) Attest(_ context.Context, creds peer.Credentials) ([]attestation.Selector, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pids = append(a.pids, creds.PID)
	return a.sels, a.err
}

func (a *fakeAttestor) set(err error, sels ...attestation.Selector) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sels, a.err = sels, err
}

// fakeMinter signs JWT-SVIDs with the test CA, or fails with err.
type fakeMinter struct {
	ca  *ca.CA
	err error
}

func (m *fakeMinter) FetchJWTSVID(ctx context.Context, e cache.Entry, audience []string) (*jwtsvid.SVID, error) {
	if m.err != nil {
		return nil, m.err
	}
	token, _, err := m.ca.SignJWTSVID(ctx, e.SPIFFEID, audience, e.JWTTTL)
	if err != nil {
		return nil, err
	}
	return jwtsvid.ParseInsecure(token, audience)
}

// env is an agent-like setup: a real CA, a cache filled from it and a handler serving it on a socket.
type env struct {
	t        *testing.T
	ca       *ca.CA
	cache    *cache.Cache
	attestor *fakeAttestor
	minter   *fakeMinter
	socket   string
}

var (
	webEntry   = cache.Entry{ID: "e-web", SPIFFEID: webID, Selectors: []attestation.Selector{webSel}, Labels: map[string]string{"hint": "web"}}
	adminEntry = cache.Entry{ID: "e-admin", SPIFFEID: adminID, Selectors: []attestation.Selector{webSel}, Labels: map[string]string{"hint": "admin"}}
	dbEntry    = cache.Entry{ID: "e-db", SPIFFEID: dbID, Selectors: []attestation.Selector{dbSel}}
)

// newEnv starts a handler whose cache has the entries (each with an SVID) and, if ready, the bundle.
// Callers attest as sels.
func newEnv(t *testing.T, ready bool, sels []attestation.Selector, entries ...cache.Entry) *env {
	t.Helper()
	c := catest.NewCA(t, td)
	e := &env{t: t, ca: c, cache: cache.New(), attestor: &fakeAttestor{sels: sels}, minter: &fakeMinter{ca: c}}
	e.cache.ReplaceEntries(entries, 1)
	svids := map[string]*cache.SVID{}
	for _, en := range entries {
		svids[en.ID] = e.sign(en.SPIFFEID)
	}
	e.cache.SetSVIDs(svids)
	if ready {
		e.cache.SetBundle(c.Bundle())
	}
	e.socket = e.serve(e.attestor)
	return e
}

// serve runs a handler on a new socket with the given attestor and returns the socket path.
func (e *env) serve(a Attestor) string {
	t := e.t
	h, err := New(Config{Attestor: a, Cache: e.cache, JWT: e.minter})
	if err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(peer.TransportCredentials()))
	h.Register(s)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return socket
}

func (e *env) sign(id spiffeid.ID) *cache.SVID {
	e.t.Helper()
	key, chain := catest.IssueSVID(e.t, e.ca, id, 0)
	svid, err := cache.FromX509SVID(&x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key})
	if err != nil {
		e.t.Fatal(err)
	}
	return svid
}

func (e *env) addr() workloadapi.ClientOption { return workloadapi.WithAddr("unix://" + e.socket) }

// raw returns a plain gRPC Workload API client.
func (e *env) raw() workload.SpiffeWorkloadAPIClient {
	e.t.Helper()
	conn, err := grpc.NewClient("unix://"+e.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	return workload.NewSpiffeWorkloadAPIClient(conn)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func withHeader(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
}

func svidIDs(svids []*x509svid.SVID) []string {
	var out []string
	for _, s := range svids {
		out = append(out, s.ID.String()+" hint="+s.Hint)
	}
	return out
}

func TestFetchX509Context(t *testing.T) {
	t.Run("a workload gets its svid, key and the trust bundle", func(t *testing.T) {
		e := newEnv(t, true, []attestation.Selector{dbSel, strangerS}, webEntry, dbEntry)
		ctx := testContext(t)
		x, err := workloadapi.FetchX509Context(ctx, e.addr())
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{dbID.String() + " hint="}, svidIDs(x.SVIDs)); diff != "" {
			t.Errorf("svids (-want +got):\n%s", diff)
		}
		want, err := e.cache.SVIDs()[dbEntry.ID].X509SVID()
		if err != nil {
			t.Fatal(err)
		}
		got := x.SVIDs[0]
		if !got.Certificates[0].Equal(want.Certificates[0]) || len(got.Certificates) != 2 {
			t.Errorf("got a different certificate chain (%d certs)", len(got.Certificates))
		}
		if !got.PrivateKey.Public().(*ecdsa.PublicKey).Equal(want.PrivateKey.Public()) {
			t.Error("got a different private key")
		}
		b, err := x.Bundles.GetX509BundleForTrustDomain(td)
		if err != nil {
			t.Fatal(err)
		}
		if !b.Equal(e.ca.Bundle().X509Bundle()) {
			t.Error("x509 bundle differs from the ca's")
		}
		if _, _, err := x509svid.Verify(got.Certificates, x.Bundles); err != nil {
			t.Errorf("svid does not verify against the served bundle: %v", err)
		}
	})
	t.Run("a workload with two entries gets both with their hints", func(t *testing.T) {
		e := newEnv(t, true, []attestation.Selector{webSel}, webEntry, adminEntry, dbEntry)
		svids, err := workloadapi.FetchX509SVIDs(testContext(t), e.addr())
		if err != nil {
			t.Fatal(err)
		}
		want := []string{adminID.String() + " hint=admin", webID.String() + " hint=web"}
		if diff := cmp.Diff(want, svidIDs(svids)); diff != "" {
			t.Errorf("svids (-want +got):\n%s", diff)
		}
	})
	t.Run("a second identity with the same hint is left out", func(t *testing.T) {
		dup := adminEntry
		dup.Labels = map[string]string{"hint": "web"}
		e := newEnv(t, true, []attestation.Selector{webSel}, webEntry, dup)
		svids, err := workloadapi.FetchX509SVIDs(testContext(t), e.addr())
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{adminID.String() + " hint=web"}, svidIDs(svids)); diff != "" {
			t.Errorf("svids (-want +got):\n%s", diff)
		}
	})
}

// call makes one Workload API call and returns the error of its first response.
type call func(ctx context.Context, c workload.SpiffeWorkloadAPIClient) error

func firstRecv[T any](s interface{ Recv() (*T, error) }, err error) error {
	if err != nil {
		return err
	}
	_, err = s.Recv()
	return err
}

var calls = map[string]call{
	"FetchX509SVID": func(ctx context.Context, c workload.SpiffeWorkloadAPIClient) error {
		s, err := c.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
		return firstRecv[workload.X509SVIDResponse](s, err)
	},
	"FetchX509Bundles": func(ctx context.Context, c workload.SpiffeWorkloadAPIClient) error {
		s, err := c.FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
		return firstRecv[workload.X509BundlesResponse](s, err)
	},
	"FetchJWTBundles": func(ctx context.Context, c workload.SpiffeWorkloadAPIClient) error {
		s, err := c.FetchJWTBundles(ctx, &workload.JWTBundlesRequest{})
		return firstRecv[workload.JWTBundlesResponse](s, err)
	},
	"FetchJWTSVID": func(ctx context.Context, c workload.SpiffeWorkloadAPIClient) error {
		_, err := c.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"db"}})
		return err
	},
}

func TestStatusCodes(t *testing.T) {
	tests := []struct {
		name  string
		ready bool
		sels  []attestation.Selector
		err   error
		noHdr bool
		want  map[string]codes.Code
		msg   string // expected message of FetchX509SVID
	}{
		{
			name: "a request without the security header is an invalid argument", ready: true, sels: []attestation.Selector{webSel}, noHdr: true,
			want: map[string]codes.Code{"FetchX509SVID": codes.InvalidArgument, "FetchX509Bundles": codes.InvalidArgument, "FetchJWTBundles": codes.InvalidArgument, "FetchJWTSVID": codes.InvalidArgument},
			msg:  "security header missing from request",
		},
		{
			name: "a caller that fails attestation is denied", ready: true, err: peer.ErrProcessChanged,
			want: map[string]codes.Code{"FetchX509SVID": codes.PermissionDenied, "FetchX509Bundles": codes.PermissionDenied, "FetchJWTBundles": codes.PermissionDenied, "FetchJWTSVID": codes.PermissionDenied},
			msg:  "workload attestation failed: " + peer.ErrProcessChanged.Error(),
		},
		{
			name: "a caller without a matching entry is denied", ready: true, sels: []attestation.Selector{strangerS},
			want: map[string]codes.Code{"FetchX509SVID": codes.PermissionDenied, "FetchX509Bundles": codes.PermissionDenied, "FetchJWTBundles": codes.PermissionDenied, "FetchJWTSVID": codes.PermissionDenied},
			msg:  "no identity issued",
		},
		{
			name: "an agent without a bundle is unavailable", ready: false, sels: []attestation.Selector{webSel},
			want: map[string]codes.Code{"FetchX509SVID": codes.Unavailable, "FetchX509Bundles": codes.Unavailable, "FetchJWTBundles": codes.Unavailable, "FetchJWTSVID": codes.Unavailable},
			msg:  "agent has no identities yet",
		},
		{
			name: "a registered caller gets answers", ready: true, sels: []attestation.Selector{webSel},
			want: map[string]codes.Code{"FetchX509SVID": codes.OK, "FetchX509Bundles": codes.OK, "FetchJWTBundles": codes.OK, "FetchJWTSVID": codes.OK},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.ready, tt.sels, webEntry, dbEntry)
			e.attestor.set(tt.err, tt.sels...)
			c := e.raw()
			ctx := testContext(t)
			if !tt.noHdr {
				ctx = withHeader(ctx)
			}
			got := map[string]codes.Code{}
			for name, call := range calls {
				err := call(ctx, c)
				got[name] = status.Code(err)
				if name == "FetchX509SVID" && tt.msg != "" {
					if diff := cmp.Diff(tt.msg, status.Convert(err).Message()); diff != "" {
						t.Errorf("message (-want +got):\n%s", diff)
					}
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("codes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestX509SVIDRotation(t *testing.T) {
	e := newEnv(t, true, []attestation.Selector{webSel}, webEntry)
	ctx := testContext(t)
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(e.addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	first, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}

	rotated := e.sign(webID)
	e.cache.SetSVIDs(map[string]*cache.SVID{webEntry.ID: rotated})
	for {
		got, err := src.GetX509SVID()
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(got.Certificates[0].Raw, rotated.Leaf) {
			break
		}
		if !got.Certificates[0].Equal(first.Certificates[0]) {
			t.Fatal("source has a certificate that is neither the first nor the rotated one")
		}
		select {
		case <-src.Updated():
		case <-ctx.Done():
			t.Fatal("x509 source never saw the rotated svid")
		}
	}
}

func TestX509SVIDStream(t *testing.T) {
	e := newEnv(t, true, []attestation.Selector{webSel}, webEntry, dbEntry)
	ctx := withHeader(testContext(t))
	s, err := e.raw().FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}

	// A change that the caller cannot see is not pushed; the next message is the rotation.
	e.cache.SetSVIDs(map[string]*cache.SVID{dbEntry.ID: e.sign(dbID)})
	rotated := e.sign(webID)
	e.cache.SetSVIDs(map[string]*cache.SVID{webEntry.ID: rotated})
	next, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if cmp.Equal(first.Svids[0].X509Svid, next.Svids[0].X509Svid) || !cmp.Equal(rotated.Chain(), next.Svids[0].X509Svid) {
		t.Errorf("second message is not the rotated svid")
	}

	// Deleting the caller's only entry ends the stream.
	e.cache.ApplyDelta(nil, []string{webEntry.ID}, 2)
	_, err = s.Recv()
	if diff := cmp.Diff(codes.PermissionDenied, status.Code(err)); diff != "" {
		t.Errorf("after delete (-want +got):\n%s (%v)", diff, err)
	}
	_, err = workloadapi.FetchX509Context(testContext(t), e.addr())
	if diff := cmp.Diff(codes.PermissionDenied, status.Code(err)); diff != "" {
		t.Errorf("fetch after delete (-want +got):\n%s (%v)", diff, err)
	}
}

// extraRoot returns the ca's bundle with one more X.509 authority, as after a root rotation.
func extraRoot(t *testing.T, b *spiffebundle.Bundle) *spiffebundle.Bundle {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	nb := b.Clone()
	nb.AddX509Authority(cert)
	return nb
}

func TestX509BundlesStream(t *testing.T) {
	e := newEnv(t, true, []attestation.Selector{webSel}, webEntry)
	s, err := e.raw().FetchX509Bundles(withHeader(testContext(t)), &workload.X509BundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{td.IDString()}, keys(first.Bundles)); diff != "" {
		t.Errorf("bundle keys (-want +got):\n%s", diff)
	}

	// An SVID rotation is not pushed on the bundle stream; the next message is the new root.
	e.cache.SetSVIDs(map[string]*cache.SVID{webEntry.ID: e.sign(webID)})
	newBundle := extraRoot(t, e.ca.Bundle())
	e.cache.SetBundle(newBundle)
	next, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(x509Roots(newBundle), next.Bundles[td.IDString()]); diff != "" {
		t.Errorf("second message is not the new bundle (-want +got):\n%s", diff)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestJWT(t *testing.T) {
	e := newEnv(t, true, []attestation.Selector{webSel}, webEntry, adminEntry, dbEntry)
	ctx := testContext(t)

	t.Run("a fetched jwt-svid validates", func(t *testing.T) {
		svid, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "db", Subject: webID}, e.addr())
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(webID.String(), svid.ID.String()); diff != "" {
			t.Errorf("id (-want +got):\n%s", diff)
		}
		got, err := workloadapi.ValidateJWTSVID(ctx, svid.Marshal(), "db", e.addr())
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(webID.String(), got.ID.String()); diff != "" {
			t.Errorf("validated id (-want +got):\n%s", diff)
		}
		resp, err := e.raw().ValidateJWTSVID(withHeader(ctx), &workload.ValidateJWTSVIDRequest{Audience: "db", Svid: svid.Marshal()})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(webID.String(), resp.Claims.AsMap()["sub"]); diff != "" {
			t.Errorf("sub claim (-want +got):\n%s", diff)
		}
	})
	t.Run("a workload with two entries gets a jwt-svid for each", func(t *testing.T) {
		svids, err := workloadapi.FetchJWTSVIDs(ctx, jwtsvid.Params{Audience: "db"}, e.addr())
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, s := range svids {
			got = append(got, s.ID.String()+" hint="+s.Hint)
		}
		if diff := cmp.Diff([]string{adminID.String() + " hint=admin", webID.String() + " hint=web"}, got); diff != "" {
			t.Errorf("svids (-want +got):\n%s", diff)
		}
	})
	t.Run("jwt bundles verify the jwt-svid", func(t *testing.T) {
		bundles, err := workloadapi.FetchJWTBundles(ctx, e.addr())
		if err != nil {
			t.Fatal(err)
		}
		svid, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "db"}, e.addr())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := jwtsvid.ParseAndValidate(svid.Marshal(), bundles, []string{"db"}); err != nil {
			t.Errorf("jwt-svid does not validate against the served jwt bundles: %v", err)
		}
	})

	token, _, err := e.ca.SignJWTSVID(ctx, dbID, []string{"db"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		call func(c workload.SpiffeWorkloadAPIClient) error
		want codes.Code
	}{
		{"fetching without an audience is an invalid argument", func(c workload.SpiffeWorkloadAPIClient) error {
			_, err := c.FetchJWTSVID(withHeader(ctx), &workload.JWTSVIDRequest{})
			return err
		}, codes.InvalidArgument},
		{"fetching an identity the caller does not have is denied", func(c workload.SpiffeWorkloadAPIClient) error {
			_, err := c.FetchJWTSVID(withHeader(ctx), &workload.JWTSVIDRequest{Audience: []string{"db"}, SpiffeId: dbID.String()})
			return err
		}, codes.PermissionDenied},
		{"fetching a malformed spiffe id is an invalid argument", func(c workload.SpiffeWorkloadAPIClient) error {
			_, err := c.FetchJWTSVID(withHeader(ctx), &workload.JWTSVIDRequest{Audience: []string{"db"}, SpiffeId: "not an id"})
			return err
		}, codes.InvalidArgument},
		{"validating a bad token is an invalid argument", func(c workload.SpiffeWorkloadAPIClient) error {
			_, err := c.ValidateJWTSVID(withHeader(ctx), &workload.ValidateJWTSVIDRequest{Audience: "db", Svid: "not.a.token"})
			return err
		}, codes.InvalidArgument},
		{"validating for another audience is an invalid argument", func(c workload.SpiffeWorkloadAPIClient) error {
			_, err := c.ValidateJWTSVID(withHeader(ctx), &workload.ValidateJWTSVIDRequest{Audience: "web", Svid: token})
			return err
		}, codes.InvalidArgument},
		{"validating without an svid is an invalid argument", func(c workload.SpiffeWorkloadAPIClient) error {
			_, err := c.ValidateJWTSVID(withHeader(ctx), &workload.ValidateJWTSVIDRequest{Audience: "db"})
			return err
		}, codes.InvalidArgument},
		{"validating another workload's token needs no entry of its own", func(c workload.SpiffeWorkloadAPIClient) error {
			_, err := c.ValidateJWTSVID(withHeader(ctx), &workload.ValidateJWTSVIDRequest{Audience: "db", Svid: token})
			return err
		}, codes.OK},
		{"validating without the security header is an invalid argument", func(c workload.SpiffeWorkloadAPIClient) error {
			_, err := c.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "db", Svid: token})
			return err
		}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(e.raw())
			if diff := cmp.Diff(tt.want, status.Code(err)); diff != "" {
				t.Errorf("code (-want +got):\n%s (%v)", diff, err)
			}
		})
	}

	audienceTests := []struct {
		name     string
		audience []string
		wantMsg  string
	}{
		{"an empty audience value", []string{"db", ""}, "audience value 1 is empty; each value must be 1 to 256 bytes"},
		{"17 audience values", []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q"}, "17 audience values; a jwt-svid may name at most 16"},
		{"a 2 MiB audience value", []string{string(bytes.Repeat([]byte("x"), 2<<20))}, "audience value 0 is 2097152 bytes; each value must be 1 to 256 bytes"},
		{"a NUL inside an audience value", []string{"admin\x00billing"}, "audience value 0 has the control character U+0000 at byte 5; use printable characters only"},
		{"a newline in an audience value", []string{"db\nforged: yes"}, "audience value 0 has the control character U+000A at byte 2; use printable characters only"},
	}
	for _, tt := range audienceTests {
		t.Run("fetching with "+tt.name+" is an invalid argument that says what is wrong", func(t *testing.T) {
			_, err := e.raw().FetchJWTSVID(withHeader(ctx), &workload.JWTSVIDRequest{Audience: tt.audience})
			got := status.Convert(err)
			if diff := cmp.Diff(codes.InvalidArgument, got.Code()); diff != "" {
				t.Errorf("code (-want +got):\n%s (%v)", diff, err)
			}
			if diff := cmp.Diff(tt.wantMsg, got.Message()); diff != "" {
				t.Errorf("message (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("a failing minter makes fetching unavailable", func(t *testing.T) {
		e.minter.err = errors.New("server unreachable")
		defer func() { e.minter.err = nil }()
		_, err := e.raw().FetchJWTSVID(withHeader(ctx), &workload.JWTSVIDRequest{Audience: []string{"db"}})
		if diff := cmp.Diff(codes.Unavailable, status.Code(err)); diff != "" {
			t.Errorf("code (-want +got):\n%s (%v)", diff, err)
		}
	})
	t.Run("a stranger may validate a token", func(t *testing.T) {
		e.attestor.set(nil, strangerS)
		defer e.attestor.set(nil, webSel)
		if _, err := workloadapi.ValidateJWTSVID(ctx, token, "db", e.addr()); err != nil {
			t.Errorf("validate: %v", err)
		}
	})
}

func TestSPIFFETLS(t *testing.T) {
	e := newEnv(t, true, []attestation.Selector{webSel}, webEntry, dbEntry)
	dbSocket := e.serve(&fakeAttestor{sels: []attestation.Selector{dbSel}})
	ctx := testContext(t)

	webSrc, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(e.addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer webSrc.Close()
	dbSrc, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+dbSocket)))
	if err != nil {
		t.Fatal(err)
	}
	defer dbSrc.Close()

	l, err := spiffetls.ListenWithMode(ctx, "tcp", "127.0.0.1:0", spiffetls.MTLSServerWithSource(tlsconfig.AuthorizeID(webID), dbSrc))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	peers := make(chan string, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			peers <- err.Error()
			return
		}
		defer conn.Close()
		buf := make([]byte, 5)
		if _, err := io.ReadFull(conn, buf); err != nil {
			peers <- err.Error()
			return
		}
		id, err := spiffetls.PeerIDFromConn(conn)
		if err != nil {
			peers <- err.Error()
			return
		}
		peers <- id.String() + " said " + string(buf)
	}()

	conn, err := spiffetls.DialWithMode(ctx, "tcp", l.Addr().String(), spiffetls.MTLSClientWithSource(tlsconfig.AuthorizeID(dbID), webSrc))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	serverID, err := spiffetls.PeerIDFromConn(conn)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(dbID.String(), serverID.String()); diff != "" {
		t.Errorf("server id (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(webID.String()+" said hello", <-peers); diff != "" {
		t.Errorf("server saw (-want +got):\n%s", diff)
	}
}

func TestServerWithoutPeerCredentials(t *testing.T) {
	e := newEnv(t, true, []attestation.Selector{webSel}, webEntry)
	h, err := New(Config{Attestor: e.attestor, Cache: e.cache, JWT: e.minter})
	if err != nil {
		t.Fatal(err)
	}
	e.socket = filepath.Join(t.TempDir(), "plain.sock")
	l, err := net.Listen("unix", e.socket)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer() // no peer.TransportCredentials: a wiring mistake
	h.Register(s)
	go s.Serve(l)
	t.Cleanup(s.Stop)

	err = calls["FetchX509SVID"](withHeader(testContext(t)), e.raw())
	if diff := cmp.Diff(codes.Internal, status.Code(err)); diff != "" {
		t.Errorf("code (-want +got):\n%s (%v)", diff, err)
	}
}

func TestNewRequiresDependencies(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
	}{
		{"a config without an attestor is rejected", Config{Cache: cache.New(), JWT: &fakeMinter{}}},
		{"a config without a cache is rejected", Config{Attestor: &fakeAttestor{}, JWT: &fakeMinter{}}},
		{"a config without a jwt minter is rejected", Config{Attestor: &fakeAttestor{}, Cache: cache.New()}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); err == nil {
				t.Error("New succeeded")
			}
		})
	}
}
