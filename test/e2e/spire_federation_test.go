//go:build e2e && federation

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// spireDir is where scripts/components/spire.sh put spire-server (env KITH_SPIRE, set by make
// test-federation).
func spireDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KITH_SPIRE")
	if dir == "" {
		t.Fatal("KITH_SPIRE is not set: build SPIRE once with scripts/components/spire.sh (it prints the directory; needs gcc for sqlite's cgo) " +
			"and run KITH_SPIRE=<that directory> go test -tags e2e,federation ./test/e2e/, or run make test-federation")
	}
	if _, err := os.Stat(filepath.Join(dir, "spire-server")); err != nil {
		t.Fatalf("KITH_SPIRE=%s has no spire-server (%v): run scripts/components/spire.sh", dir, err)
	}
	return dir
}

// spire is a SPIRE server in trust domain spire.test with a bundle endpoint (https_spiffe).
type spire struct {
	t          *testing.T
	bin, dir   string
	socket     string
	bundleAddr string
}

func startSPIRE(t *testing.T) *spire {
	t.Helper()
	s := &spire{t: t, bin: filepath.Join(spireDir(t), "spire-server"), dir: shortTempDir(t)}
	s.socket = filepath.Join(s.dir, "api.sock")
	s.bundleAddr = freeAddr(t)
	host, port, _ := strings.Cut(s.bundleAddr, ":")
	conf := fmt.Sprintf(`server {
  bind_address = "127.0.0.1"
  bind_port = "%s"
  socket_path = %q
  trust_domain = "spire.test"
  data_dir = %q
  log_level = "DEBUG"
  federation {
    bundle_endpoint {
      address = %q
      port = %s
    }
  }
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = %q
    }
  }
  KeyManager "memory" {
    plugin_data {}
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
}
`, strings.Split(freeAddr(t), ":")[1], s.socket, filepath.Join(s.dir, "data"), host, port, filepath.Join(s.dir, "data", "datastore.sqlite3"))
	confPath := filepath.Join(s.dir, "server.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startCmd(t, "spire-server", nil, exec.Command(s.bin, "run", "-config", confPath))
	eventually(t, 60*time.Second, "spire-server healthcheck", func() error {
		if p.exited() {
			t.Fatalf("spire-server exited:\n%s", lastLines(p.stderr.String()+p.stdout.String(), 30))
		}
		_, err := s.run("healthcheck")
		return err
	})
	return s
}

// run runs a spire-server CLI command against the running server.
func (s *spire) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.bin, append(args, "-socketPath", s.socket)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("spire-server %s: %v: %s%s", strings.Join(args, " "), err, errb.String(), out.String())
	}
	return out.String(), nil
}

func (s *spire) mustRun(args ...string) string {
	s.t.Helper()
	out, err := s.run(args...)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

// A SPIRE 1.13 server and Kith federate both ways over each other's bundle endpoints (https_spiffe): Kith
// fetches SPIRE's bundle and hands it to a federating workload, SPIRE fetches Kith's; an SVID SPIRE mints
// and a Kith workload's SVID then do mTLS, each verified with the bundle the other side fetched.
func TestSPIREFederatesWithKith(t *testing.T) {
	sp := startSPIRE(t)
	k := newFederatedCluster(t, "kith.test")
	spireTD := spiffeid.RequireTrustDomainFromString("spire.test")

	spireBundle := filepath.Join(k.dir, "spire.bundle.json")
	if err := os.WriteFile(spireBundle, []byte(sp.mustRun("bundle", "show", "-format", "spiffe")), 0o644); err != nil {
		t.Fatal(err)
	}
	mustKith(t, k.adminSocket, "federation", "create", "--trust-domain", "spire.test",
		"--bundle-endpoint-url", "https://"+sp.bundleAddr, "--profile", "https_spiffe",
		"--endpoint-spiffe-id", "spiffe://spire.test/spire/server", "--trust-bundle", spireBundle)
	kithBundle := filepath.Join(k.dir, "kith.bundle.json")
	if err := os.WriteFile(kithBundle, []byte(mustKith(t, k.adminSocket, "bundle", "show", "--format", "spiffe")), 0o644); err != nil {
		t.Fatal(err)
	}
	sp.mustRun("federation", "create", "-trustDomain", "kith.test", "-bundleEndpointURL", "https://"+k.bundleAddr,
		"-bundleEndpointProfile", "https_spiffe", "-endpointSpiffeID", "spiffe://kith.test/kith/server",
		"-trustDomainBundlePath", kithBundle, "-trustDomainBundleFormat", "spiffe")

	t.Run("Kith fetches SPIRE's bundle from its endpoint", func(t *testing.T) {
		eventually(t, 20*time.Second, "kith's refresh of spire.test", func() error {
			f := federationStatus(t, k.adminSocket, "spire.test")
			if f.GetLastRefresh() == nil || f.GetLastError() != "" {
				return fmt.Errorf("last refresh %v, last error %q", f.GetLastRefresh(), f.GetLastError())
			}
			return nil
		})
	})
	t.Run("SPIRE fetches Kith's bundle from its endpoint", func(t *testing.T) {
		// SPIRE loads relationships every 10 s; refresh asks for a fetch now.
		eventually(t, 40*time.Second, "spire-server federation refresh -id kith.test", func() error {
			_, err := sp.run("federation", "refresh", "-id", "kith.test")
			return err
		})
		out := sp.mustRun("federation", "show", "-trustDomain", "kith.test")
		if !strings.Contains(out, "kith.test") {
			t.Errorf("spire-server federation show:\n%s", out)
		}
	})

	// A Kith workload federating with spire.test.
	id := spiffeid.RequireFromString("spiffe://kith.test/svc/api")
	k.startAgent("node", k.joinToken("node"))
	mustKith(t, k.adminSocket, "entry", "create", "--spiffe-id", id.String(), "--node-selector", "join_token:name:node",
		"--selector", uidSelector(), "--federates-with", "spire.test")
	waitSVID(t, k.agentDirs("node").socket, id)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+k.agentDirs("node").socket)))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	eventually(t, 15*time.Second, "the Kith workload gets spire.test's bundle", func() error {
		_, err := src.GetX509BundleForTrustDomain(spireTD)
		return err
	})

	// An X.509-SVID SPIRE mints, with the bundles SPIRE holds (its own and the one it fetched from Kith).
	mint := filepath.Join(sp.dir, "mint")
	if err := os.Mkdir(mint, 0o700); err != nil { // spire-server x509 mint -write needs the directory
		t.Fatal(err)
	}
	spireID := spiffeid.RequireFromString("spiffe://spire.test/svc/web")
	sp.mustRun("x509", "mint", "-spiffeID", spireID.String(), "-write", mint)
	spireSVID, err := x509svid.Load(filepath.Join(mint, "svid.pem"), filepath.Join(mint, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	own, err := x509bundle.Load(spireTD, filepath.Join(mint, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	spireSet := x509bundle.NewSet(own)
	eventually(t, 40*time.Second, "SPIRE holds Kith's bundle", func() error {
		out, err := sp.run("bundle", "list", "-id", "spiffe://kith.test", "-format", "pem")
		if err != nil {
			return err
		}
		kb, err := x509bundle.Parse(k.td, []byte(out))
		if err != nil {
			return fmt.Errorf("parse spire's bundle of kith.test: %w\n%s", err, out)
		}
		spireSet.Add(kb)
		return nil
	})

	t.Run("a SPIRE SVID and a Kith workload do mTLS both ways", func(t *testing.T) {
		spireSrc := staticSource{svid: spireSVID, bundles: spireSet}
		mtlsSources(t, spireSrc, spireSrc, spireID, src, src, id)
		mtlsSources(t, src, src, id, spireSrc, spireSrc, spireID)
	})
}

type staticSource struct {
	svid    *x509svid.SVID
	bundles *x509bundle.Set
}

func (s staticSource) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }
func (s staticSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.bundles.GetX509BundleForTrustDomain(td)
}

// mtlsSources is mtls for any sources: the server presents serverSVID and accepts clientID only.
func mtlsSources(t *testing.T, serverSVID x509svid.Source, serverBundles x509bundle.Source, serverID spiffeid.ID,
	clientSVID x509svid.Source, clientBundles x509bundle.Source, clientID spiffeid.ID) {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", tlsconfig.MTLSServerConfig(serverSVID, serverBundles, tlsconfig.AuthorizeID(clientID)))
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
		done <- conn.(*tls.Conn).Handshake()
		_, _ = conn.Write([]byte("ok"))
	}()
	conn, err := tls.Dial("tcp", l.Addr().String(), tlsconfig.MTLSClientConfig(clientSVID, clientBundles, tlsconfig.AuthorizeID(serverID)))
	if err != nil {
		t.Fatalf("mTLS %s → %s: %v", clientID, serverID, err)
	}
	buf := make([]byte, 2)
	_, _ = conn.Read(buf)
	conn.Close()
	if err := <-done; err != nil {
		t.Fatalf("mTLS %s → %s: server side: %v", clientID, serverID, err)
	}
}
