package sds

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const quiet = 200 * time.Millisecond

// workloadTLS fetches default + ROOTCA over StreamSecrets and builds an mTLS config from the PEMs.
func workloadTLS(t *testing.T, c *sotwClient, peer spiffeid.ID, server bool) (*tls.Config, *x509bundle.Bundle, bool) {
	t.Helper()
	c.request("default", "ROOTCA")
	got := secrets(t, c.recv().Resources)
	if diff := cmp.Diff([]string{"ROOTCA", "default"}, names(got)); diff != "" {
		t.Fatalf("secret names (-want +got):\n%s", diff)
	}
	tc := got["default"].GetTlsCertificate()
	svid, err := x509svid.Parse(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	if err != nil {
		t.Fatal(err)
	}
	spiffe, roots := bundlePEMOf(t, got["ROOTCA"])
	bundle, err := x509bundle.Parse(td, roots)
	if err != nil {
		t.Fatal(err)
	}
	if server {
		return tlsconfig.MTLSServerConfig(svid, bundle, tlsconfig.AuthorizeID(peer)), bundle, spiffe
	}
	return tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(peer)), bundle, spiffe
}

func TestSecretsCompleteARealMTLSHandshake(t *testing.T) {
	e := newEnv(t)
	// A uses the default SPIFFE validator form, B asks for a plain trusted_ca.
	a := openSotW(t, e.connA, nodeWith("sidecar-a", nil))
	b := openSotW(t, e.connB, nodeWith("sidecar-b", map[string]any{MetadataValidation: "trusted_ca"}))
	serverCfg, bundleA, spiffeA := workloadTLS(t, a, idB, true)
	clientCfg, _, spiffeB := workloadTLS(t, b, idA, false)
	if !spiffeA || spiffeB {
		t.Fatalf("validation forms: a spiffe=%v (want true), b spiffe=%v (want false)", spiffeA, spiffeB)
	}

	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	srv, cli := tls.Server(c1, serverCfg), tls.Client(c2, clientCfg)
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}

	for _, tc := range []struct {
		name string
		conn *tls.Conn
		want spiffeid.ID
	}{
		{"the server sees workload b", srv, idB},
		{"the client sees workload a", cli, idA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certs := tc.conn.ConnectionState().PeerCertificates
			id, err := x509svid.IDFromCert(certs[0])
			if err != nil {
				t.Fatal(err)
			}
			if id != tc.want {
				t.Fatalf("peer id %s, want %s", id, tc.want)
			}
			if _, _, err := x509svid.Verify(certs, bundleA); err != nil {
				t.Fatalf("peer chain does not verify against the served bundle: %v", err)
			}
		})
	}
}

func TestFetchSecrets(t *testing.T) {
	e := newEnv(t)
	client := secretv3.NewSecretDiscoveryServiceClient(e.connA)
	for _, tc := range []struct {
		name      string
		names     []string
		want      []string
		wantCode  codes.Code
		wantIDFor string // name whose certificate must be A's
	}{
		{name: "default and ROOTCA come back under the names asked for", names: []string{"default", "ROOTCA"}, want: []string{"ROOTCA", "default"}, wantIDFor: "default"},
		{name: "the SPIFFE ID and the trust domain work as names", names: []string{idA.String(), "spiffe://example.org"}, want: []string{"spiffe://example.org", idA.String()}, wantIDFor: idA.String()},
		{name: "ALL is every bundle", names: []string{"ALL"}, want: []string{"ALL"}},
		{name: "an empty list is everything the caller may have", names: nil, want: []string{"spiffe://example.org", idA.String()}, wantIDFor: idA.String()},
		{name: "an unknown name is NotFound", names: []string{"default", "nope"}, wantCode: codes.NotFound},
		{name: "another workload's SPIFFE ID is NotFound", names: []string{idB.String()}, wantCode: codes.NotFound},
		{name: "an unknown trust domain is NotFound", names: []string{"spiffe://other.org"}, wantCode: codes.NotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := client.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{TypeUrl: SecretType, ResourceNames: tc.names})
			if tc.wantCode != codes.OK {
				if status.Code(err) != tc.wantCode {
					t.Fatalf("error %v, want code %s", err, tc.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.VersionInfo == "" || resp.Nonce == "" {
				t.Fatalf("version %q nonce %q: want both set", resp.VersionInfo, resp.Nonce)
			}
			got := secrets(t, resp.Resources)
			if diff := cmp.Diff(tc.want, names(got)); diff != "" {
				t.Fatalf("names (-want +got):\n%s", diff)
			}
			if tc.wantIDFor != "" {
				id, _ := x509svid.IDFromCert(leafOf(t, got[tc.wantIDFor]))
				if id != idA {
					t.Fatalf("certificate for %s, want %s", id, idA)
				}
			}
		})
	}
}

func TestWorkloadCannotGetAnotherWorkloadsSecret(t *testing.T) {
	e := newEnv(t)
	t.Run("by name on a stream", func(t *testing.T) {
		a := openSotW(t, e.connA, nil)
		a.request(idB.String())
		if err := a.fail(); status.Code(err) != codes.NotFound {
			t.Fatalf("error %v, want NotFound", err)
		}
	})
	t.Run("by changing names on an open stream", func(t *testing.T) {
		a := openSotW(t, e.connA, nil)
		a.request("default")
		a.recv()
		a.request("default", idB.String())
		if err := a.fail(); status.Code(err) != codes.NotFound {
			t.Fatalf("error %v, want NotFound", err)
		}
	})
	t.Run("with everything it may have", func(t *testing.T) {
		a := openSotW(t, e.connA, nil)
		a.request()
		for n, s := range secrets(t, a.recv().Resources) {
			if s.GetTlsCertificate() == nil {
				continue
			}
			if id, _ := x509svid.IDFromCert(leafOf(t, s)); id != idA {
				t.Fatalf("secret %s holds %s's certificate", n, id)
			}
		}
	})
}

func TestStreamSecretsProtocol(t *testing.T) {
	t.Run("every response has a version and a nonce and the name asked for", func(t *testing.T) {
		e := newEnv(t)
		a := openSotW(t, e.connA, nil)
		a.request("default")
		r := a.recv()
		if r.VersionInfo == "" || r.Nonce == "" || r.TypeUrl != SecretType {
			t.Fatalf("version %q nonce %q type %q", r.VersionInfo, r.Nonce, r.TypeUrl)
		}
		if diff := cmp.Diff([]string{"default"}, names(secrets(t, r.Resources))); diff != "" {
			t.Fatal(diff)
		}
	})
	t.Run("an unknown name ends the stream with NotFound instead of hanging", func(t *testing.T) {
		e := newEnv(t)
		a := openSotW(t, e.connA, nil)
		a.request("no-such-secret")
		if err := a.fail(); status.Code(err) != codes.NotFound {
			t.Fatalf("error %v, want NotFound", err)
		}
	})
	t.Run("an ACK is not answered", func(t *testing.T) {
		e := newEnv(t)
		a := openSotW(t, e.connA, nil)
		a.request("default", "ROOTCA")
		a.recv()
		a.ack("default", "ROOTCA")
		a.quiet(quiet)
	})
	t.Run("a changed name list on the same stream is honoured", func(t *testing.T) {
		e := newEnv(t)
		a := openSotW(t, e.connA, nil)
		a.request("default")
		first := a.recv()
		a.request("default", "ALL")
		r := a.recv()
		if diff := cmp.Diff([]string{"ALL", "default"}, names(secrets(t, r.Resources))); diff != "" {
			t.Fatalf("names (-want +got):\n%s", diff)
		}
		if r.VersionInfo == first.VersionInfo || r.Nonce == first.Nonce {
			t.Fatalf("version and nonce did not change: %s/%s", r.VersionInfo, r.Nonce)
		}
	})
	t.Run("a request with a stale nonce is ignored", func(t *testing.T) {
		e := newEnv(t)
		a := openSotW(t, e.connA, nil)
		a.request("default")
		r := a.recv()
		a.send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{"ROOTCA"}, VersionInfo: r.VersionInfo, ResponseNonce: "stale"})
		a.quiet(quiet)
		a.request("ROOTCA")
		if diff := cmp.Diff([]string{"ROOTCA"}, names(secrets(t, a.recv().Resources))); diff != "" {
			t.Fatal(diff)
		}
	})
	t.Run("a request for another type is refused", func(t *testing.T) {
		e := newEnv(t)
		a := openSotW(t, e.connA, nil)
		if err := a.st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster"}); err != nil {
			t.Fatal(err)
		}
		if err := a.fail(); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("error %v, want InvalidArgument", err)
		}
	})
	t.Run("SPIRE's disable_spiffe_cert_validation asks for trusted_ca", func(t *testing.T) {
		e := newEnv(t)
		a := openSotW(t, e.connA, nodeWith("n", map[string]any{MetadataDisableSPIFFE: true}))
		a.request("ROOTCA")
		if spiffe, _ := bundlePEMOf(t, secrets(t, a.recv().Resources)["ROOTCA"]); spiffe {
			t.Fatal("got the SPIFFE validator, want trusted_ca")
		}
	})
}

func TestRotation(t *testing.T) {
	e := newEnv(t)
	a := openSotW(t, e.connA, nodeWith("sidecar-a", nil))
	old := e.rotate("a", 3*time.Second) // a short-lived SVID
	a.request("default", "ROOTCA")
	first := a.recv()
	if got := leafOf(t, secrets(t, first.Resources)["default"]); !got.Equal(svidLeaf(t, old)) {
		t.Fatal("first response is not the current SVID")
	}
	a.ack("default", "ROOTCA")

	// The agent rotates at half-life; the proxy gets the new certificate before the old one expires.
	next := e.rotate("a", 3*time.Second)
	r := a.recv()
	if time.Now().After(old.NotAfter) {
		t.Fatal("new certificate arrived after the old one expired")
	}
	got := secrets(t, r.Resources)
	if !leafOf(t, got["default"]).Equal(svidLeaf(t, next)) {
		t.Fatal("push does not hold the new SVID")
	}
	if diff := cmp.Diff([]string{"ROOTCA", "default"}, names(got)); diff != "" {
		t.Fatalf("a push is the whole state of the world (-want +got):\n%s", diff)
	}
	if r.VersionInfo == first.VersionInfo || r.Nonce == first.Nonce {
		t.Fatal("push reused the version or nonce")
	}

	t.Run("the ACK of a push is not answered with a duplicate", func(t *testing.T) {
		a.ack("default", "ROOTCA")
		a.quiet(quiet)
	})
	t.Run("a NACK is counted with the node id and nothing is resent", func(t *testing.T) {
		e.rotate("a", 3*time.Second)
		bad := a.recv()
		a.send(&discoveryv3.DiscoveryRequest{
			ResourceNames: []string{"default", "ROOTCA"},
			VersionInfo:   r.VersionInfo, // the version the proxy keeps
			ResponseNonce: bad.Nonce,
			ErrorDetail:   &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: "bad key"},
		})
		a.quiet(quiet)
		if diff := cmp.Diff([]string{"sidecar-a"}, e.nacks.got()); diff != "" {
			t.Fatalf("nacks (-want +got):\n%s", diff)
		}
	})
	t.Run("the next rotation after a NACK is pushed", func(t *testing.T) {
		s := e.rotate("a", 3*time.Second)
		if !leafOf(t, secrets(t, a.recv().Resources)["default"]).Equal(svidLeaf(t, s)) {
			t.Fatal("push does not hold the newest SVID")
		}
	})
}

func TestPushesReachOnlyAffectedStreams(t *testing.T) {
	e := newEnv(t)
	a := openSotW(t, e.connA, nil)
	aRoots := openSotW(t, e.connA, nil)
	b := openSotW(t, e.connB, nil)
	a.request("default", "ROOTCA")
	aRoots.request("ROOTCA")
	b.request("default", "ROOTCA")
	for _, c := range []*sotwClient{a, aRoots, b} {
		c.recv()
	}

	t.Run("rotating a's SVID pushes to a's certificate stream only", func(t *testing.T) {
		e.rotate("a", 10*time.Second)
		a.recv()
		b.quiet(quiet)
		aRoots.quiet(0)
	})
	t.Run("a bundle change pushes to every stream", func(t *testing.T) {
		e.cache.SetBundle(e.bundleWithExtraRoot())
		for _, c := range []*sotwClient{a, aRoots, b} {
			got := secrets(t, c.recv().Resources)
			if _, ok := got["ROOTCA"]; !ok {
				t.Fatalf("push without ROOTCA: %v", names(got))
			}
		}
	})
	t.Run("an entry change pushes to the workload it concerns", func(t *testing.T) {
		e.cache.ApplyDelta(nil, []string{"b"}, 2)
		r := b.recv()
		if diff := cmp.Diff([]string{"ROOTCA"}, names(secrets(t, r.Resources))); diff != "" {
			t.Fatalf("b's secrets after its entry was deleted (-want +got):\n%s", diff)
		}
		a.quiet(quiet)
	})
}

func TestNewRequiresAttestorAndCache(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"without an attestor", Config{Cache: nil}},
		{"without a cache", Config{Attestor: fixedAttestor{}}},
	} {
		t.Run(tc.name+" it fails", func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil {
				t.Fatal("want an error")
			}
		})
	}
}
