// Command federation measures federation between two `kith server` processes (trust domains a.bench and
// b.bench, run from the kith binary on a temp dir, loopback only): how many requests per second a bundle
// endpoint (https_spiffe) serves, full bundles and 304 Not Modified answers to If-None-Match polls; and how
// long a CA change in a.bench takes to reach b.bench's store, b.bench federating with a.bench whose bundle
// asks for a refresh every second.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/bench/internal/kithenv"
	"github.com/kithid/kith/bench/internal/latency"
)

func main() {
	bin := flag.String("kith", "bin/kith", "kith binary")
	clients := flag.Int("clients", 8, "concurrent pollers of the bundle endpoint")
	duration := flag.Duration("duration", 5*time.Second, "how long each request-rate run lasts")
	trials := flag.Int("trials", 5, "CA changes timed from a.bench to b.bench")
	flag.Parse()
	if err := run(*bin, *clients, *duration, *trials); err != nil {
		fmt.Fprintln(os.Stderr, "federation:", err)
		os.Exit(1)
	}
}

type server struct {
	td         spiffeid.TrustDomain
	cmd        *exec.Cmd
	admin      adminv1.AdminServiceClient
	bundleAddr string
	dir        string
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startServer(ctx context.Context, bin, dir, td string) (*server, error) {
	s := &server{td: spiffeid.RequireTrustDomainFromString(td), bundleAddr: freeAddr(), dir: filepath.Join(dir, td)}
	log, err := os.Create(filepath.Join(dir, td+".log"))
	if err != nil {
		return nil, err
	}
	s.cmd = exec.Command(bin, "server", "--data-dir", s.dir, "--trust-domain", td, "--log-level", "warn")
	s.cmd.Env = append(os.Environ(), "KITH_LISTEN_GRPC="+freeAddr(), "KITH_LISTEN_HTTP="+freeAddr(),
		"KITH_FEDERATION_BUNDLE_ENDPOINT_ADDRESS="+s.bundleAddr, "KITH_FEDERATION_BUNDLE_ENDPOINT_REFRESH_HINT=1s")
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	sock := filepath.Join(s.dir, "admin.sock")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("%s: no admin socket after 30s (see %s.log)", td, td)
		}
	}
	_, admin, err := kithenv.DialAdmin(sock)
	if err != nil {
		return s, err
	}
	s.admin = admin
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := tls.Dial("tcp", s.bundleAddr, &tls.Config{InsecureSkipVerify: true}); err == nil { //nolint:gosec // readiness probe only
			break
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("%s: bundle endpoint not serving after 10s", td)
		}
	}
	_ = ctx
	return s, nil
}

func (s *server) bundle(ctx context.Context) (*spiffebundle.Bundle, []byte, error) {
	resp, err := s.admin.GetBundle(ctx, &adminv1.GetBundleRequest{})
	if err != nil {
		return nil, nil, err
	}
	b, err := spiffebundle.Parse(s.td, resp.GetSpiffeBundle())
	return b, resp.GetSpiffeBundle(), err
}

func run(bin string, clients int, duration time.Duration, trials int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "kith-bench-federation")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var servers []*server
	defer func() {
		for _, s := range servers {
			if s != nil && s.cmd.Process != nil {
				_ = s.cmd.Process.Kill()
				_ = s.cmd.Wait()
			}
		}
	}()
	a, err := startServer(ctx, bin, dir, "a.bench")
	servers = append(servers, a)
	if err != nil {
		return err
	}
	b, err := startServer(ctx, bin, dir, "b.bench")
	servers = append(servers, b)
	if err != nil {
		return err
	}
	aBundle, aDoc, err := a.bundle(ctx)
	if err != nil {
		return err
	}

	// 1. Requests per second of a's bundle endpoint, over TLS connections kept alive, as a federated server
	// polling with the profile https_spiffe would.
	endpointID := spiffeid.RequireFromPath(a.td, "/kith/server")
	tr := &http.Transport{TLSClientConfig: tlsconfig.TLSClientConfig(aBundle, tlsconfig.AuthorizeID(endpointID)), MaxIdleConnsPerHost: clients}
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	url := "https://" + a.bundleAddr
	resp, err := client.Get(url)
	if err != nil {
		return fmt.Errorf("get bundle endpoint: %w", err)
	}
	etag := resp.Header.Get("ETag")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Printf("bundle endpoint (https_spiffe, %d bytes, ETag %s), %d clients, %s each:\n", len(body), etag, clients, duration)
	for _, mode := range []struct {
		name, inm string
		want      int
	}{{"full bundle (200)", "", 200}, {"If-None-Match poll (304)", etag, 304}} {
		var n, bad atomic.Int64
		var lat []time.Duration
		var mu sync.Mutex
		stop := time.Now().Add(duration)
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				var mine []time.Duration
				for time.Now().Before(stop) {
					req, _ := http.NewRequest(http.MethodGet, url, nil)
					if mode.inm != "" {
						req.Header.Set("If-None-Match", mode.inm)
					}
					t0 := time.Now()
					resp, err := client.Do(req)
					if err != nil {
						bad.Add(1)
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != mode.want {
						bad.Add(1)
						continue
					}
					mine = append(mine, time.Since(t0))
					n.Add(1)
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
		}
		wg.Wait()
		fmt.Printf("  %-26s %8.0f requests/s  latency %s  (%d failed)\n", mode.name, float64(n.Load())/duration.Seconds(), latency.Summarize(lat), bad.Load())
	}

	// 2. b federates with a; a's CA changes; how long until b's store holds a's new bundle.
	if _, err := b.admin.CreateFederation(ctx, &adminv1.CreateFederationRequest{
		Federation:  &adminv1.Federation{TrustDomain: "a.bench", BundleEndpointUrl: url, Profile: "https_spiffe", EndpointSpiffeId: endpointID.String()},
		TrustBundle: aDoc,
	}); err != nil {
		return fmt.Errorf("create federation: %w", err)
	}
	seqAt := func() (uint64, error) {
		resp, err := b.admin.ListFederatedBundles(ctx, &adminv1.ListFederatedBundlesRequest{})
		if err != nil {
			return 0, err
		}
		for _, fb := range resp.GetBundles() {
			if fb.GetTrustDomain() == "a.bench" {
				return fb.GetSequenceNumber(), nil
			}
		}
		return 0, nil
	}
	var times []time.Duration
	for i := range trials {
		before, _, err := a.bundle(ctx)
		if err != nil {
			return err
		}
		seq0, _ := before.SequenceNumber()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if s, err := seqAt(); err == nil && s == seq0 {
				break
			} else if time.Now().After(deadline) {
				return errors.New("b.bench never held a.bench's current bundle")
			}
		}
		t0 := time.Now()
		// The first trial rotates the root (published at once, signing only after ca.root_overlap); the
		// others rotate the intermediate and JWT key, which changes the bundle's JWT keys.
		if _, err := a.admin.RotateCA(ctx, &adminv1.RotateCARequest{Root: i == 0}); err != nil {
			return fmt.Errorf("rotate: %w", err)
		}
		after, _, err := a.bundle(ctx)
		if err != nil {
			return err
		}
		seq1, _ := after.SequenceNumber()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if s, err := seqAt(); err == nil && s == seq1 {
				break
			} else if time.Now().After(deadline) {
				return fmt.Errorf("trial %d: b.bench did not take a.bench's new bundle within 30s", i)
			}
		}
		times = append(times, time.Since(t0))
	}
	fmt.Printf("CA change in a.bench → in b.bench's store (refresh hint 1s), %d trials: %s\n", trials, latency.Summarize(times))
	return nil
}
