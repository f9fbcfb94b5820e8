package sds

import (
	"context"
	"crypto/x509"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/peer"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/catest"
	"github.com/kithid/kith/ca/keymanager/memory"
	"github.com/kithid/kith/svid/cache"
)

var (
	td    = spiffeid.RequireTrustDomainFromString("example.org")
	idA   = spiffeid.RequireFromString("spiffe://example.org/ns/a/sa/app")
	idB   = spiffeid.RequireFromString("spiffe://example.org/ns/b/sa/app")
	selsA = []attestation.Selector{{Type: "unix", Key: "uid", Value: "1001"}}
	selsB = []attestation.Selector{{Type: "unix", Key: "uid", Value: "1002"}}
)

// fixedAttestor attests every caller with the same selectors: one per test server, one server per workload.
type fixedAttestor struct{ sels []attestation.Selector }

func (f fixedAttestor) Attest(context.Context, peer.Credentials) ([]attestation.Selector, error) {
	return f.sels, nil
}

// nackCounter records OnNACK calls.
type nackCounter struct {
	mu    sync.Mutex
	nodes []string
}

func (n *nackCounter) OnNACK(node string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nodes = append(n.nodes, node)
}

func (n *nackCounter) got() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.nodes...)
}

// env is a CA, an agent cache holding identities A and B, and one SDS server per workload.
type env struct {
	t     testing.TB
	ca    *ca.CA
	cache *cache.Cache
	nacks *nackCounter
	svids map[string]*cache.SVID // by entry id
	connA *grpc.ClientConn
	connB *grpc.ClientConn
}

func newEnv(t testing.TB) *env {
	t.Helper()
	authority := catest.NewCA(t, td, func(c *ca.Config) { c.MinSVIDTTL = time.Second })
	e := &env{t: t, ca: authority, cache: cache.New(), nacks: &nackCounter{}, svids: map[string]*cache.SVID{}}
	e.cache.SetBundle(authority.Bundle())
	e.cache.ReplaceEntries([]cache.Entry{
		{ID: "a", SPIFFEID: idA, Selectors: selsA, Revision: 1},
		{ID: "b", SPIFFEID: idB, Selectors: selsB, Revision: 1},
	}, 1)
	e.rotate("a", 10*time.Second)
	e.rotate("b", 10*time.Second)
	e.connA = e.serve(selsA)
	e.connB = e.serve(selsB)
	return e
}

// rotate signs a new SVID for an entry and puts it in the cache, like the agent's rotation does.
func (e *env) rotate(entryID string, ttl time.Duration) *cache.SVID {
	e.t.Helper()
	ent, ok := e.cache.Entry(entryID)
	if !ok {
		e.t.Fatalf("no entry %s", entryID)
	}
	s := e.sign(ent.SPIFFEID, ttl)
	e.svids[entryID] = s
	e.cache.SetSVIDs(map[string]*cache.SVID{entryID: s})
	return s
}

func (e *env) sign(id spiffeid.ID, ttl time.Duration) *cache.SVID {
	e.t.Helper()
	key, chain := catest.IssueSVID(e.t, e.ca, id, ttl)
	svid, err := cache.FromX509SVID(&x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key})
	if err != nil {
		e.t.Fatal(err)
	}
	return svid
}

// bundleWithExtraRoot returns the CA's bundle plus the root of another CA, as after a root rotation.
func (e *env) bundleWithExtraRoot() *spiffebundle.Bundle {
	e.t.Helper()
	other, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Keys: memory.New(), Store: catest.NewStore()})
	if err != nil {
		e.t.Fatal(err)
	}
	b := e.ca.Bundle().Clone()
	for _, c := range other.Bundle().X509Authorities() {
		b.AddX509Authority(c)
	}
	return b
}

// serve starts an SDS server for one workload on a unix socket and returns a client connection to it.
func (e *env) serve(sels []attestation.Selector) *grpc.ClientConn {
	e.t.Helper()
	srv, err := New(Config{Attestor: fixedAttestor{sels}, Cache: e.cache, OnNACK: e.nacks.OnNACK})
	if err != nil {
		e.t.Fatal(err)
	}
	return serveSDS(e.t, srv)
}

func serveSDS(t testing.TB, srv *Server) *grpc.ClientConn {
	t.Helper()
	return dialSDS(t, listenSDS(t, srv))
}

// listenSDS serves srv on a new unix socket and returns the socket's path.
func listenSDS(t testing.TB, srv *Server) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	g := grpc.NewServer(grpc.Creds(peer.TransportCredentials()))
	srv.Register(g)
	lis, err := listenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return sock
}

// dialSDS returns a client connection to the server on sock.
func dialSDS(t testing.TB, sock string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	conn, err := grpc.NewClient("unix://"+sock, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// sotwClient is a StreamSecrets stream with its responses pumped into a channel.
type sotwClient struct {
	t     *testing.T
	st    grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	resps chan *discoveryv3.DiscoveryResponse
	errs  chan error
	last  *discoveryv3.DiscoveryResponse
	node  *corev3.Node
}

func openSotW(t *testing.T, conn *grpc.ClientConn, node *corev3.Node) *sotwClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &sotwClient{t: t, st: st, resps: make(chan *discoveryv3.DiscoveryResponse, 16), errs: make(chan error, 1), node: node}
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				c.errs <- err
				return
			}
			c.resps <- r
		}
	}()
	return c
}

func (c *sotwClient) send(req *discoveryv3.DiscoveryRequest) {
	c.t.Helper()
	req.TypeUrl = SecretType
	if err := c.st.Send(req); err != nil {
		c.t.Fatal(err)
	}
}

// request sends the first request or a names change, echoing the last response.
func (c *sotwClient) request(names ...string) {
	c.t.Helper()
	c.send(&discoveryv3.DiscoveryRequest{Node: c.node, ResourceNames: names, VersionInfo: c.last.GetVersionInfo(), ResponseNonce: c.last.GetNonce()})
}

func (c *sotwClient) ack(names ...string) {
	c.t.Helper()
	c.send(&discoveryv3.DiscoveryRequest{ResourceNames: names, VersionInfo: c.last.GetVersionInfo(), ResponseNonce: c.last.GetNonce()})
}

// recvWithin waits up to d for the next response (a failure bound, not a speed target).
func (c *sotwClient) recvWithin(d time.Duration) *discoveryv3.DiscoveryResponse {
	c.t.Helper()
	select {
	case r := <-c.resps:
		c.last = r
		return r
	case err := <-c.errs:
		c.t.Fatalf("stream ended: %v", err)
	case <-time.After(d):
		c.t.Fatalf("no response within %s", d)
	}
	return nil
}

// recv waits for the next response.
func (c *sotwClient) recv() *discoveryv3.DiscoveryResponse {
	c.t.Helper()
	return c.recvWithin(5 * time.Second)
}

// quiet asserts no response arrives within d.
func (c *sotwClient) quiet(d time.Duration) {
	c.t.Helper()
	select {
	case r := <-c.resps:
		c.t.Fatalf("unexpected response: version %s nonce %s, %d resources", r.VersionInfo, r.Nonce, len(r.Resources))
	case err := <-c.errs:
		c.t.Fatalf("stream ended: %v", err)
	case <-time.After(d):
	}
}

// fail waits for the stream to end with an error.
func (c *sotwClient) fail() error {
	c.t.Helper()
	return streamError(c.t, c.resps, c.errs, func(r *discoveryv3.DiscoveryResponse) int { return len(r.Resources) })
}

// streamError waits for a stream to end with an error; a response first fails the test.
func streamError[R any](t *testing.T, resps <-chan R, errs <-chan error, resources func(R) int) error {
	t.Helper()
	select {
	case r := <-resps:
		t.Fatalf("want an error, got a response with %d resources", resources(r))
	case err := <-errs:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("no error within 5s")
	}
	return nil
}

// secrets unpacks a response's resources by name.
func secrets(t *testing.T, anys []*anypb.Any) map[string]*tlsv3.Secret {
	t.Helper()
	out := map[string]*tlsv3.Secret{}
	for _, a := range anys {
		if a.TypeUrl != SecretType {
			t.Fatalf("resource type %s, want %s", a.TypeUrl, SecretType)
		}
		var s tlsv3.Secret
		if err := a.UnmarshalTo(&s); err != nil {
			t.Fatal(err)
		}
		out[s.Name] = &s
	}
	return out
}

func names(m map[string]*tlsv3.Secret) []string {
	var out []string
	for n := range m {
		out = append(out, n)
	}
	sortStrings(out)
	return out
}

// leafOf returns the leaf certificate of a tls_certificate secret.
func leafOf(t *testing.T, s *tlsv3.Secret) *x509.Certificate {
	t.Helper()
	tc := s.GetTlsCertificate()
	if tc == nil {
		t.Fatalf("secret %s is not a tls_certificate", s.Name)
	}
	svid, err := x509svid.Parse(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	if err != nil {
		t.Fatalf("parse secret %s: %v", s.Name, err)
	}
	return svid.Certificates[0]
}

// bundlePEMOf returns the roots of a validation_context secret, whichever form it has.
func bundlePEMOf(t *testing.T, s *tlsv3.Secret) (spiffe bool, pemBytes []byte) {
	t.Helper()
	vc := s.GetValidationContext()
	if vc == nil {
		t.Fatalf("secret %s is not a validation_context", s.Name)
	}
	if ca := vc.GetTrustedCa(); ca != nil {
		return false, ca.GetInlineBytes()
	}
	if vc.GetCustomValidatorConfig().GetName() != "envoy.tls.cert_validator.spiffe" {
		t.Fatalf("custom validator %q", vc.GetCustomValidatorConfig().GetName())
	}
	var cfg tlsv3.SPIFFECertValidatorConfig
	if err := vc.GetCustomValidatorConfig().GetTypedConfig().UnmarshalTo(&cfg); err != nil {
		t.Fatal(err)
	}
	for _, d := range cfg.TrustDomains {
		pemBytes = append(pemBytes, d.GetTrustBundle().GetInlineBytes()...)
	}
	return true, pemBytes
}

func nodeWith(id string, md map[string]any) *corev3.Node {
	n := &corev3.Node{Id: id, Cluster: "test"}
	if md != nil {
		s, err := structpb.NewStruct(md)
		if err != nil {
			panic(err)
		}
		n.Metadata = s
	}
	return n
}

// svidLeaf parses the leaf certificate of a cached SVID.
func svidLeaf(t *testing.T, s *cache.SVID) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(s.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
