//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

// federatedCluster is a cluster in its own trust domain with a bundle endpoint (https_spiffe) whose bundle
// asks to be refreshed every second.
type federatedCluster struct {
	*cluster
	bundleAddr string
	env        []string // more environment for the server
}

func newFederatedCluster(t *testing.T, td string, env ...string) *federatedCluster {
	t.Helper()
	dir := shortTempDir(t)
	c := &cluster{
		t: t, dir: dir, td: spiffeid.RequireTrustDomainFromString(td),
		grpcAddr: freeAddr(t), httpAddr: freeAddr(t),
		adminSocket: filepath.Join(dir, "server", "admin.sock"),
	}
	fc := &federatedCluster{cluster: c, bundleAddr: freeAddr(t), env: env}
	fc.start()
	return fc
}

func (fc *federatedCluster) start() {
	c := fc.cluster
	c.server = start(c.t, "server "+c.td.Name(), append([]string{"KITH_LISTEN_GRPC=" + c.grpcAddr, "KITH_LISTEN_HTTP=" + c.httpAddr,
		"KITH_FEDERATION_BUNDLE_ENDPOINT_ADDRESS=" + fc.bundleAddr, "KITH_FEDERATION_BUNDLE_ENDPOINT_REFRESH_HINT=1s"}, fc.env...),
		"server", "--data-dir", filepath.Join(c.dir, "server"), "--trust-domain", c.td.Name())
	c.server.waitOutput("kith server started", 20*time.Second)
}

// federateWith makes fc federate with other over https_spiffe, starting from other's current bundle.
func (fc *federatedCluster) federateWith(other *federatedCluster) {
	t := fc.t
	first := filepath.Join(fc.dir, other.td.Name()+".bundle.json")
	if err := os.WriteFile(first, []byte(mustKith(t, other.adminSocket, "bundle", "show", "--format", "spiffe")), 0o644); err != nil {
		t.Fatal(err)
	}
	mustKith(t, fc.adminSocket, "federation", "create", "--trust-domain", other.td.Name(),
		"--bundle-endpoint-url", "https://"+other.bundleAddr, "--profile", "https_spiffe",
		"--endpoint-spiffe-id", "spiffe://"+other.td.Name()+"/kith/server", "--trust-bundle", first)
}

// federationStatus is `kith federation show TD -o json`.
func federationStatus(t *testing.T, adminSocket, td string) *adminv1.Federation {
	var f adminv1.Federation
	kithProto(t, adminSocket, &f, "federation", "show", td)
	return &f
}

// Two Kith deployments in two trust domains federate both ways over their bundle endpoints (https_spiffe):
// a workload of each does mTLS with a workload of the other through go-spiffe; a root rotated in one domain
// reaches the other's workloads before it signs anything; with one endpoint down the other keeps the last
// good bundle and says why.
func TestFederationBothWays(t *testing.T) {
	a := newFederatedCluster(t, "a.test")
	b := newFederatedCluster(t, "b.test")
	a.federateWith(b)
	b.federateWith(a)

	for _, fc := range []*federatedCluster{a, b} {
		eventually(t, 15*time.Second, fc.td.Name()+" refreshes its federated bundle", func() error {
			for _, other := range []string{"a.test", "b.test"} {
				if other == fc.td.Name() {
					continue
				}
				f := federationStatus(t, fc.adminSocket, other)
				if f.GetLastRefresh() == nil || f.GetLastError() != "" {
					return fmt.Errorf("federation with %s: last refresh %v, last error %q", other, f.GetLastRefresh(), f.GetLastError())
				}
			}
			return nil
		})
	}

	idA := spiffeid.RequireFromString("spiffe://a.test/svc/api")
	idB := spiffeid.RequireFromString("spiffe://b.test/svc/web")
	a.startAgent("node", a.joinToken("node"))
	b.startAgent("node", b.joinToken("node"))
	mustKith(t, a.adminSocket, "entry", "create", "--spiffe-id", idA.String(), "--node-selector", "join_token:name:node",
		"--selector", uidSelector(), "--federates-with", "b.test")
	mustKith(t, b.adminSocket, "entry", "create", "--spiffe-id", idB.String(), "--node-selector", "join_token:name:node",
		"--selector", uidSelector(), "--federates-with", "a.test")
	waitSVID(t, a.agentDirs("node").socket, idA)
	waitSVID(t, b.agentDirs("node").socket, idB)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srcA, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+a.agentDirs("node").socket)))
	if err != nil {
		t.Fatal(err)
	}
	defer srcA.Close()
	srcB, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+b.agentDirs("node").socket)))
	if err != nil {
		t.Fatal(err)
	}
	defer srcB.Close()
	eventually(t, 15*time.Second, "each workload's X509Source holds both trust domains' bundles", func() error {
		for _, s := range []*workloadapi.X509Source{srcA, srcB} {
			for _, td := range []string{"a.test", "b.test"} {
				if _, err := s.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString(td)); err != nil {
					return err
				}
			}
		}
		return nil
	})

	t.Run("a workload of each trust domain does mTLS with one of the other", func(t *testing.T) {
		mtls(t, srcA, idA, srcB, idB)
		mtls(t, srcB, idB, srcA, idA)
	})

	t.Run("a root rotated in one domain is trusted by the other's workloads before it signs", func(t *testing.T) {
		before, err := srcB.GetX509BundleForTrustDomain(a.td)
		if err != nil {
			t.Fatal(err)
		}
		started := time.Now()
		mustKith(t, a.adminSocket, "ca", "rotate", "--root")
		newRoots := serverBundle(t, a.adminSocket, a.td).X509Authorities()
		if len(newRoots) != len(before.X509Authorities())+1 {
			t.Fatalf("a.test publishes %d roots after the rotation, want %d", len(newRoots), len(before.X509Authorities())+1)
		}
		eventually(t, 20*time.Second, "b.test's workload trusts a.test's new root", func() error {
			got, err := srcB.GetX509BundleForTrustDomain(a.td)
			if err != nil {
				return err
			}
			if n := len(got.X509Authorities()); n != len(newRoots) {
				return fmt.Errorf("b.test's workload has %d roots of a.test, want %d", n, len(newRoots))
			}
			return nil
		})
		t.Logf("a.test root rotation reached b.test's workload in %s (bundle refresh hint 1s)", time.Since(started).Round(time.Millisecond))
		// The new root is published, not yet signing: a.test's SVIDs still chain to the old one.
		svid, err := srcA.GetX509SVID()
		if err != nil {
			t.Fatal(err)
		}
		chain := svid.Certificates
		top := chain[len(chain)-1]
		for _, r := range before.X509Authorities() {
			if string(r.RawSubject) == string(top.RawIssuer) {
				mtls(t, srcA, idA, srcB, idB)
				return
			}
		}
		t.Errorf("a.test's SVID chains to a root b.test did not trust before the rotation")
	})

	t.Run("with a's bundle endpoint down b keeps the last good bundle and reports the error", func(t *testing.T) {
		have := len(serverBundle(t, a.adminSocket, a.td).X509Authorities())
		a.server.kill()
		eventually(t, 20*time.Second, "b.test reports the failed refresh", func() error {
			f := federationStatus(t, b.adminSocket, "a.test")
			if f.GetLastError() == "" {
				return fmt.Errorf("no error yet (last refresh %v)", f.GetLastRefresh().AsTime())
			}
			return nil
		})
		f := federationStatus(t, b.adminSocket, "a.test")
		if got := len(f.GetBundle().GetX509Authorities()); got != have {
			t.Errorf("b.test holds %d roots of a.test with the endpoint down, want the last good %d", got, have)
		}
		got, err := srcB.GetX509BundleForTrustDomain(a.td)
		if err != nil || len(got.X509Authorities()) != have {
			t.Errorf("b.test's workload lost a.test's bundle with the endpoint down: %v", err)
		}
		if !strings.Contains(mustKith(t, b.adminSocket, "federation", "list"), "a.test") {
			t.Errorf("kith federation list does not show a.test")
		}
	})
}

// mtls serves TLS from server's source (accepting only clientID) and connects from client's source
// (accepting only serverID), and checks each side saw the other's SPIFFE ID.
func mtls(t *testing.T, server *workloadapi.X509Source, serverID spiffeid.ID, client *workloadapi.X509Source, clientID spiffeid.ID) {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", tlsconfig.MTLSServerConfig(server, server, tlsconfig.AuthorizeID(clientID)))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		if err := conn.(*tls.Conn).Handshake(); err != nil {
			done <- err
			return
		}
		_, err = conn.Write([]byte("hello from " + serverID.String()))
		done <- err
	}()
	conn, err := tls.Dial("tcp", l.Addr().String(), tlsconfig.MTLSClientConfig(client, client, tlsconfig.AuthorizeID(serverID)))
	if err != nil {
		t.Fatalf("mTLS %s → %s: %v", clientID, serverID, err)
	}
	defer conn.Close()
	msg, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("mTLS %s → %s: read: %v", clientID, serverID, err)
	}
	if err := <-done; err != nil {
		t.Fatalf("mTLS %s → %s: server side: %v", clientID, serverID, err)
	}
	if want := "hello from " + serverID.String(); string(msg) != want {
		t.Errorf("read %q, want %q", msg, want)
	}
}

// A JWT-SVID is an OIDC ID token to a relying party: go-oidc discovers the provider from its issuer (the
// advertised HTTP URL, ca.jwt_issuer being unset), fetches the JWKS the discovery document names and
// verifies the token; the same documents are served alone on listen.oidc_discovery.
func TestOIDCDiscoveryVerifiesJWTSVIDs(t *testing.T) {
	dir := shortTempDir(t)
	httpAddr, oidcAddr := freeAddr(t), freeAddr(t)
	admin := filepath.Join(dir, "server", "admin.sock")
	srv := start(t, "server", []string{"KITH_LISTEN_GRPC=" + freeAddr(t), "KITH_LISTEN_HTTP=" + httpAddr, "KITH_LISTEN_OIDC_DISCOVERY=" + oidcAddr},
		"server", "--data-dir", filepath.Join(dir, "server"), "--trust-domain", "oidc.test")
	srv.waitOutput("kith server started", 20*time.Second)
	issuer := "http://" + httpAddr

	var minted adminv1.MintJWTSVIDResponse
	kithProto(t, admin, &minted, "svid", "mint", "jwt", "--spiffe-id", "spiffe://oidc.test/ci/deploy", "--audience", "sts.amazonaws.com")
	ctx := context.Background()
	provider, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		t.Fatalf("go-oidc discovery at %s: %v", issuer, err)
	}
	tok, err := provider.Verifier(&oidc.Config{ClientID: "sts.amazonaws.com"}).Verify(ctx, minted.GetToken())
	if err != nil {
		t.Fatalf("go-oidc verify: %v", err)
	}
	if tok.Issuer != issuer || tok.Subject != "spiffe://oidc.test/ci/deploy" {
		t.Errorf("token iss %q sub %q, want %q and the SPIFFE ID", tok.Issuer, tok.Subject, issuer)
	}
	if _, err := provider.Verifier(&oidc.Config{ClientID: "vault"}).Verify(ctx, minted.GetToken()); err == nil {
		t.Errorf("a token for sts.amazonaws.com verified for audience vault")
	}

	// The discovery listener serves the same documents and nothing else.
	for path, want := range map[string]int{"/.well-known/openid-configuration": 200, "/.well-known/jwks.json": 200, "/metrics": 404, "/v1/bundle": 404} {
		resp, err := http.Get("http://" + oidcAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s on listen.oidc_discovery: %d, want %d", path, resp.StatusCode, want)
		}
		if path == "/.well-known/openid-configuration" && !strings.Contains(string(body), `"issuer": "`+issuer+`"`) {
			t.Errorf("discovery on listen.oidc_discovery names another issuer:\n%s", body)
		}
	}
}

// webPKI writes a CA and a server certificate it signed for 127.0.0.1 and localhost (PEM, key 0600) into
// dir and returns their paths: a Web PKI of the test's own for an https_web bundle endpoint.
func webPKI(t *testing.T, dir, name string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " test web CA"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	caFile, certFile, keyFile = filepath.Join(dir, name+"-ca.pem"), filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	for _, f := range []struct {
		path, typ string
		der       []byte
		mode      os.FileMode
	}{{caFile, "CERTIFICATE", caDER, 0o644}, {certFile, "CERTIFICATE", der, 0o644}, {keyFile, "PRIVATE KEY", keyDER, 0o600}} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), f.mode); err != nil {
			t.Fatal(err)
		}
	}
	return caFile, certFile, keyFile
}

// TestFederationHTTPSWeb: b.test serves its bundle endpoint with a Web PKI certificate (profile https_web);
// a.test federates with it with no bundle to start from, trusting the endpoint by the Web PKI roots it has
// (here a test CA, through SSL_CERT_FILE, as a Linux system trust store is read), and gets b.test's bundle.
// c.test, whose roots do not include that CA, refuses the endpoint and says why.
func TestFederationHTTPSWeb(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	caFile, certFile, keyFile := webPKI(t, dir, "b-endpoint")
	otherCA, _, _ := webPKI(t, dir, "elsewhere")
	b := newFederatedCluster(t, "b.test", "KITH_FEDERATION_BUNDLE_ENDPOINT_PROFILE=https_web",
		"KITH_FEDERATION_BUNDLE_ENDPOINT_CERT_FILE="+certFile, "KITH_FEDERATION_BUNDLE_ENDPOINT_KEY_FILE="+keyFile)
	a := newFederatedCluster(t, "a.test", "SSL_CERT_FILE="+caFile)
	c := newFederatedCluster(t, "c.test", "SSL_CERT_FILE="+otherCA)
	for _, fc := range []*federatedCluster{a, c} {
		mustKith(t, fc.adminSocket, "federation", "create", "--trust-domain", "b.test",
			"--bundle-endpoint-url", "https://"+b.bundleAddr, "--profile", "https_web")
	}
	eventually(t, 15*time.Second, "a.test fetches b.test's bundle over https_web", func() error {
		f := federationStatus(t, a.adminSocket, "b.test")
		if f.GetLastRefresh() == nil || f.GetLastError() != "" {
			return fmt.Errorf("last refresh %v, last error %q", f.GetLastRefresh(), f.GetLastError())
		}
		return nil
	})
	var got bytes.Buffer
	for _, der := range federationStatus(t, a.adminSocket, "b.test").GetBundle().GetX509Authorities() {
		pem.Encode(&got, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	if want := mustKith(t, b.adminSocket, "bundle", "show", "--format", "pem"); strings.TrimSpace(got.String()) != strings.TrimSpace(want) {
		t.Errorf("a.test's bundle of b.test:\n%s\nb.test's own:\n%s", got.String(), want)
	}
	eventually(t, 15*time.Second, "c.test refuses the endpoint and says why", func() error {
		f := federationStatus(t, c.adminSocket, "b.test")
		if f.GetLastRefresh() != nil || !strings.Contains(f.GetLastError(), "certificate") {
			return fmt.Errorf("last refresh %v, last error %q; want no refresh and a certificate error", f.GetLastRefresh(), f.GetLastError())
		}
		return nil
	})
}
