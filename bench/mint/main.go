// Command mint measures X.509-SVID minting through the admin API, the path `kith svid mint x509` takes: an
// in-process server, gRPC clients over its real admin unix socket, and for every call a fresh P-256 key and
// CSR made client-side, then MintX509SVID. It prints SVIDs per second.
//
// With -compare-upstream it runs -rounds rounds, each measuring a self-signed server and then one under a
// disk upstream authority (a corporate issuing CA under a root, made here), and prints both rates and
// their ratio: upstream signing is off the hot path, so they should match.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/bench/internal/kithenv"
	"github.com/kithid/kith/bench/internal/latency"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/internal/config"
)

func main() {
	callers := flag.Int("callers", 8, "concurrent callers")
	conns := flag.Int("conns", 8, "gRPC connections to the admin socket, shared round-robin by the callers")
	duration := flag.Duration("duration", 10*time.Second, "how long to measure (after a 1 s warm-up)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the measured interval here")
	blockprofile := flag.String("blockprofile", "", "write a blocking profile (time goroutines waited, whole run) here")
	compare := flag.Bool("compare-upstream", false, "alternate a self-signed server and one under a disk upstream, -rounds times each")
	rounds := flag.Int("rounds", 3, "rounds of -compare-upstream")
	flag.Parse()
	if *compare {
		if err := compareUpstream(*callers, *conns, *duration, *rounds); err != nil {
			fmt.Fprintln(os.Stderr, "mint:", err)
			os.Exit(1)
		}
		return
	}
	if *blockprofile != "" {
		runtime.SetBlockProfileRate(int(10 * time.Microsecond))
		defer writeProfile("block", *blockprofile)
	}
	if err := run(*callers, *conns, *duration, *cpuprofile); err != nil {
		fmt.Fprintln(os.Stderr, "mint:", err)
		os.Exit(1)
	}
}

func writeProfile(name, path string) {
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mint:", err)
		return
	}
	defer f.Close()
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		fmt.Fprintln(os.Stderr, "mint:", err)
	}
}

func run(callers, nconns int, duration time.Duration, cpuprofile string) error {
	_, err := measure(nil, callers, nconns, duration, cpuprofile, true)
	return err
}

// measure starts a server (mod adjusts its config) and mints through it for duration; it returns SVIDs
// per second and, with report, prints the figures.
func measure(mod func(*config.Server, string) error, callers, nconns int, duration time.Duration, cpuprofile string, report bool) (float64, error) {
	ctx := context.Background()
	srv, err := kithenv.StartServerWith(ctx, mod)
	if err != nil {
		return 0, err
	}
	defer srv.Close()

	clients := make([]adminv1.AdminServiceClient, nconns)
	for i := range clients {
		var conn *grpc.ClientConn
		conn, clients[i], err = kithenv.DialAdmin(srv.AdminSocket)
		if err != nil {
			return 0, err
		}
		defer conn.Close()
	}
	id := "spiffe://" + kithenv.TrustDomain + "/bench/mint"

	var measuring atomic.Bool
	var stop atomic.Bool
	var count atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	lat := make([][]time.Duration, callers)
	for i := range callers {
		wg.Go(func() {
			c := clients[i%nconns]
			for !stop.Load() {
				start := time.Now()
				if err := mintOne(ctx, c, id); err != nil {
					errs <- err
					stop.Store(true)
					return
				}
				if measuring.Load() {
					count.Add(1)
					lat[i] = append(lat[i], time.Since(start))
				}
			}
		})
	}
	time.Sleep(time.Second) // warm-up: connections, CA key load, first allocations
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return 0, err
		}
	}
	cpu0 := cpuTime()
	measuring.Store(true)
	start := time.Now()
	time.Sleep(duration)
	measuring.Store(false)
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	n := count.Load()
	if cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	stop.Store(true)
	wg.Wait()
	select {
	case err := <-errs:
		return 0, fmt.Errorf("mint: %w", err)
	default:
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	rate := float64(n) / elapsed.Seconds()
	if !report {
		return rate, nil
	}
	fmt.Printf("mint: %d X.509-SVIDs in %.2fs with %d callers over %d admin-socket connections: %.0f SVIDs/s\n",
		n, elapsed.Seconds(), callers, nconns, float64(n)/elapsed.Seconds())
	fmt.Printf("mint: per call (key + CSR + MintX509SVID): %s\n", latency.Summarize(all))
	fmt.Printf("mint: CPU used by this process (client + server): %.0f %% of %d CPUs, %.0f µs per SVID\n",
		100*cpu.Seconds()/elapsed.Seconds()/float64(runtime.NumCPU()), runtime.NumCPU(), float64(cpu.Microseconds())/float64(n))
	return rate, nil
}

// cpuTime is the user + system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// mintOne does what `kith svid mint x509` does per call: a P-256 key and CSR here, the CA signs remotely.
func mintOne(ctx context.Context, c adminv1.AdminServiceClient, id string) error {
	sid, err := spiffeid.FromString(id)
	if err != nil {
		return err
	}
	_, csr, err := ca.NewKeyAndCSR(sid)
	if err != nil {
		return err
	}
	resp, err := c.MintX509SVID(ctx, &adminv1.MintX509SVIDRequest{SpiffeId: id, Csr: csr})
	if err != nil {
		return err
	}
	if len(resp.GetCertChain()) == 0 {
		return errors.New("empty certificate chain")
	}
	return nil
}
