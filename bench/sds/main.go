// Command sds measures SDS at scale on one agent: the real `kith server` and `kith agent` run as child
// processes; this process plays many Envoys, opening streams × connections StreamSecrets streams on the
// agent socket (each asking for `default` and `ROOTCA`, and ACKing like Envoy). It reports the agent's
// resident memory per stream, then starts a root rotation (what `kith ca rotate --root` does, which
// publishes a new root in the bundle) and times until every stream has received the changed bundle.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/bench/internal/kithenv"
	"github.com/kithid/kith/bench/internal/latency"
)

const secretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

func main() {
	bin := flag.String("kith", "bin/kith", "kith binary")
	conns := flag.Int("conns", 100, "client connections to the agent socket")
	streams := flag.Int("streams", 100, "SDS streams per connection")
	flag.Parse()
	if err := run(*bin, *conns, *streams); err != nil {
		fmt.Fprintln(os.Stderr, "sds:", err)
		os.Exit(1)
	}
}

// stream is one SDS stream; rootsAt is when it first received a ROOTCA different from its first one.
// ROOTCA is compared as serialized bytes, so the check holds for either validation form (SPIFFE validator
// or trusted_ca); the roots are counted by their PEM headers inside it.
type stream struct {
	st      grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	first   []byte // ROOTCA trusted CA bytes in the first response
	roots   int    // certificates in the changed ROOTCA
	rootsAt time.Time
}

func rootCA(resp *discoveryv3.DiscoveryResponse) ([]byte, error) {
	for _, r := range resp.GetResources() {
		var s tlsv3.Secret
		if err := r.UnmarshalTo(&s); err != nil {
			return nil, err
		}
		if s.GetName() == "ROOTCA" {
			return r.GetValue(), nil
		}
	}
	return nil, errors.New("no ROOTCA in the response")
}

func run(bin string, nconns, perConn int) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := kithenv.StartProcesses(ctx, kithenv.Options{Bin: bin})
	if err != nil {
		return err
	}
	defer p.Close()
	id := "spiffe://" + kithenv.TrustDomain + "/bench/sds"
	if _, err := p.Admin.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: &adminv1.Entry{
		SpiffeId: id, ParentId: kithenv.AgentID.String(), Selectors: []string{"unix:uid:" + strconv.Itoa(os.Getuid())},
	}}); err != nil {
		return fmt.Errorf("create entry: %w", err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		fctx, fcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := workloadapi.FetchX509Context(fctx, workloadapi.WithAddr("unix://"+p.AgentSocket))
		fcancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the entry never reached the agent: %w", err)
		}
	}
	time.Sleep(2 * time.Second)
	before, err := kithenv.ReadMemory(p.Agent.Process.Pid)
	if err != nil {
		return err
	}

	total := nconns * perConn
	all := make([]*stream, total)
	var changed atomic.Int64
	allChanged := make(chan struct{})
	var mu sync.Mutex // guards stream fields written by receivers
	setupStart := time.Now()
	var g sync.WaitGroup
	errs := make(chan error, nconns)
	for c := range nconns {
		g.Go(func() {
			conn, err := grpc.NewClient("unix://"+p.AgentSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				errs <- err
				return
			}
			context.AfterFunc(ctx, func() { conn.Close() })
			client := secretv3.NewSecretDiscoveryServiceClient(conn)
			node := &corev3.Node{Id: fmt.Sprintf("bench-envoy-%d", c), Cluster: "bench"}
			for i := range perConn {
				s, err := open(ctx, client, node)
				if err != nil {
					errs <- fmt.Errorf("stream %d/%d: %w", c, i, err)
					return
				}
				all[c*perConn+i] = s
				go func() {
					for {
						resp, err := s.st.Recv()
						if err != nil {
							return
						}
						_ = s.st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: secretType, ResourceNames: []string{"default", "ROOTCA"}, Node: node,
							VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()})
						roots, err := rootCA(resp)
						if err != nil || bytes.Equal(roots, s.first) {
							continue
						}
						now := time.Now()
						mu.Lock()
						first := s.rootsAt.IsZero()
						if first {
							s.rootsAt, s.roots = now, bytes.Count(roots, []byte("BEGIN CERTIFICATE"))
						}
						mu.Unlock()
						if first && changed.Add(1) == int64(total) {
							close(allChanged)
						}
					}
				}()
			}
		})
	}
	g.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	setup := time.Since(setupStart)
	time.Sleep(3 * time.Second)
	after, err := kithenv.ReadMemory(p.Agent.Process.Pid)
	if err != nil {
		return err
	}
	fmt.Printf("sds: %d streams (%d connections × %d) open and answered in %s\n", total, nconns, perConn, setup.Round(time.Millisecond))
	fmt.Printf("sds: agent RSS %s before → %s with the streams open (peak %s): %.1f KiB per stream\n",
		kithenv.MiB(before.RSS), kithenv.MiB(after.RSS), kithenv.MiB(after.Peak), float64(after.RSS-before.RSS)/float64(total)/1024)

	start := time.Now()
	if _, err := p.Admin.RotateCA(ctx, &adminv1.RotateCARequest{Root: true}); err != nil {
		return fmt.Errorf("rotate root: %w", err)
	}
	select {
	case <-allChanged:
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("only %d of %d streams received the new bundle within 2 minutes", changed.Load(), total)
	}
	mu.Lock()
	defer mu.Unlock()
	lat := make([]time.Duration, 0, total)
	roots := map[int]int{}
	for _, s := range all {
		lat = append(lat, s.rootsAt.Sub(start))
		roots[s.roots]++
	}
	sum := latency.Summarize(lat)
	fmt.Printf("sds: root rotation (RotateCA root=true, as `kith ca rotate --root`) → every stream has the new bundle: %s (per stream %s); ROOTCA roots after: %v\n",
		sum.Max.Round(time.Millisecond), sum, roots)
	return nil
}

func open(ctx context.Context, client secretv3.SecretDiscoveryServiceClient, node *corev3.Node) (*stream, error) {
	st, err := client.StreamSecrets(ctx)
	if err != nil {
		return nil, err
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: secretType, ResourceNames: []string{"default", "ROOTCA"}, Node: node}); err != nil {
		return nil, err
	}
	resp, err := st.Recv()
	if err != nil {
		return nil, err
	}
	first, err := rootCA(resp)
	if err != nil {
		return nil, err
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: secretType, ResourceNames: []string{"default", "ROOTCA"}, Node: node,
		VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
		return nil, err
	}
	return &stream{st: st, first: bytes.Clone(first)}, nil
}
