// Command scale measures one agent serving 10,000 entries: the real `kith server` and `kith agent` run as
// child processes; the entries are created with BatchCreateEntries and this process, a workload matching all
// of them, holds a Workload API stream open and timestamps the first response that carries every SVID. It
// then reads both processes' resident memory from /proc and fetches all SVIDs once with go-spiffe.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/bench/internal/kithenv"
)

func main() {
	bin := flag.String("kith", "bin/kith", "kith binary")
	n := flag.Int("entries", 10000, "entries to create")
	batch := flag.Int("batch", 10000, "entries per BatchCreateEntries call")
	watch := flag.Bool("watch", true, "keep a workload stream open while the SVIDs are made (false: poll with fresh fetches)")
	settle := flag.Duration("settle", 2*time.Second, "how long after every SVID is fetchable to read the processes' RSS (the Go runtime forces a GC after 2 minutes without one)")
	inProcess := flag.Bool("inprocess", false, "run server and agent in this process and time until the agent's cache holds every SVID (no workload attached)")
	memprofile := flag.String("memprofile", "", "with -inprocess: write a heap profile (after GC) once every SVID is held")
	cpuprofile := flag.String("cpuprofile", "", "with -inprocess: write a CPU profile from creation until every SVID is held")
	flag.Parse()
	run := func() error { return run(*bin, *n, *batch, *watch, *settle) }
	if *inProcess {
		run = func() error { return runInProcess(*n, *batch, *memprofile, *cpuprofile) }
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}

const maxMsg = 1 << 30

func batches(n, batch int, uid string) []*adminv1.BatchCreateEntriesRequest {
	var reqs []*adminv1.BatchCreateEntriesRequest
	for i := 0; i < n; i += batch {
		req := &adminv1.BatchCreateEntriesRequest{}
		for j := i; j < min(i+batch, n); j++ {
			req.Entries = append(req.Entries, &adminv1.Entry{SpiffeId: fmt.Sprintf("spiffe://%s/bench/scale/%05d", kithenv.TrustDomain, j),
				ParentId: kithenv.AgentID.String(), Selectors: []string{uid}})
		}
		reqs = append(reqs, req)
	}
	return reqs
}

// runInProcess times creation → every SVID in the agent's cache, with nothing else running.
func runInProcess(n, batch int, memprofile, cpuprofile string) error {
	ctx := context.Background()
	p, err := kithenv.StartInProcess(ctx)
	if err != nil {
		return err
	}
	defer p.Close()
	reqs := batches(n, batch, "unix:uid:"+strconv.Itoa(os.Getuid()))
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	start := time.Now()
	for _, req := range reqs {
		if _, err := p.Admin.BatchCreateEntries(ctx, req); err != nil {
			return fmt.Errorf("batch create entries: %w", err)
		}
	}
	created := time.Since(start)
	c := p.InProcessAgent.Cache()
	for len(c.SVIDs()) < n {
		if time.Since(start) > 5*time.Minute {
			return fmt.Errorf("the agent holds %d of %d svids after 5 minutes", len(c.SVIDs()), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(start)
	if cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	fmt.Printf("scale (in-process): %d entries created in %s (BatchCreateEntries, %d per call); the agent cache holds all %d SVIDs after %s\n",
		n, created.Round(time.Millisecond), batch, n, took.Round(time.Millisecond))
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("scale (in-process): live heap of server + agent after GC: %s\n", kithenv.MiB(int64(ms.HeapAlloc)))
	if memprofile != "" {
		f, err := os.Create(memprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		return pprof.Lookup("heap").WriteTo(f, 0)
	}
	return nil
}

func run(bin string, n, batch int, watch bool, settle time.Duration) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := kithenv.StartProcesses(ctx, kithenv.Options{Bin: bin})
	if err != nil {
		return err
	}
	defer p.Close()
	uid := "unix:uid:" + strconv.Itoa(os.Getuid())
	entry := func(id string) *adminv1.Entry {
		return &adminv1.Entry{SpiffeId: id, ParentId: kithenv.AgentID.String(), Selectors: []string{uid}}
	}
	// One entry first, so the workload stream has something to answer with.
	if _, err := p.Admin.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry("spiffe://" + kithenv.TrustDomain + "/bench/base")}); err != nil {
		return fmt.Errorf("create entry: %w", err)
	}
	conn, err := grpc.NewClient("unix://"+p.AgentSocket, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsg)))
	if err != nil {
		return err
	}
	defer conn.Close()
	wl := workload.NewSpiffeWorkloadAPIClient(conn)
	wctx := metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	count := func() (int, error) {
		fctx, cancel := context.WithTimeout(wctx, 30*time.Second)
		defer cancel()
		st, err := wl.FetchX509SVID(fctx, &workload.X509SVIDRequest{})
		if err != nil {
			return 0, err
		}
		resp, err := st.Recv()
		if err != nil {
			return 0, err
		}
		return len(resp.GetSvids()), nil
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := count(); err == nil && c == 1 {
			break
		} else if time.Now().After(deadline) {
			return fmt.Errorf("the first entry never reached the workload (svids %d, %v)", c, err)
		}
	}
	time.Sleep(time.Second)
	srvBefore, err := kithenv.ReadMemory(p.Server.Process.Pid)
	if err != nil {
		return err
	}
	agBefore, err := kithenv.ReadMemory(p.Agent.Process.Pid)
	if err != nil {
		return err
	}

	want := n + 1
	var updates atomic.Int64
	all := make(chan time.Time, 1)
	if watch {
		st, err := wl.FetchX509SVID(wctx, &workload.X509SVIDRequest{})
		if err != nil {
			return err
		}
		if _, err := st.Recv(); err != nil {
			return err
		}
		go func() {
			for {
				resp, err := st.Recv()
				if err != nil {
					return
				}
				updates.Add(1)
				if len(resp.GetSvids()) >= want {
					all <- time.Now()
					return
				}
			}
		}()
	}

	reqs := batches(n, batch, uid)
	start := time.Now()
	for _, req := range reqs {
		if _, err := p.Admin.BatchCreateEntries(ctx, req); err != nil {
			return fmt.Errorf("batch create entries: %w", err)
		}
	}
	created := time.Since(start)
	var done time.Time
	if watch {
		select {
		case done = <-all:
		case <-time.After(5 * time.Minute):
			return errors.New("the workload never received every svid")
		}
	} else {
		for polls := 0; ; polls++ {
			c, err := count()
			if err == nil && c >= want {
				done = time.Now()
				updates.Store(int64(polls))
				break
			}
			if time.Since(start) > 5*time.Minute {
				return fmt.Errorf("the workload never received every svid (last %d, %v)", c, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	took := done.Sub(start)
	mode := fmt.Sprintf("the workload's open stream (%d updates)", updates.Load())
	if !watch {
		mode = fmt.Sprintf("polled with fresh fetches every 50 ms (%d polls)", updates.Load())
	}
	fmt.Printf("scale: %d entries created in %s (BatchCreateEntries, %d per call); all %d SVIDs fetchable after %s, seen by %s\n",
		n, created.Round(time.Millisecond), batch, want, took.Round(time.Millisecond), mode)

	time.Sleep(settle)
	srvAfter, err := kithenv.ReadMemory(p.Server.Process.Pid)
	if err != nil {
		return err
	}
	agAfter, err := kithenv.ReadMemory(p.Agent.Process.Pid)
	if err != nil {
		return err
	}
	fmt.Printf("scale: server RSS %s with 1 entry → %s with %d (peak %s)\n", kithenv.MiB(srvBefore.RSS), kithenv.MiB(srvAfter.RSS), want, kithenv.MiB(srvAfter.Peak))
	fmt.Printf("scale: agent  RSS %s with 1 entry → %s with %d (peak %s)\n", kithenv.MiB(agBefore.RSS), kithenv.MiB(agAfter.RSS), want, kithenv.MiB(agAfter.Peak))
	fmt.Printf("scale: RSS %s after: server anonymous %s + file-backed %s; agent anonymous %s + file-backed %s (with 1 entry: %s + %s)\n",
		settle, kithenv.MiB(srvAfter.Anon), kithenv.MiB(srvAfter.File), kithenv.MiB(agAfter.Anon), kithenv.MiB(agAfter.File),
		kithenv.MiB(agBefore.Anon), kithenv.MiB(agBefore.File))

	fstart := time.Now()
	fctx, fcancel := context.WithTimeout(ctx, time.Minute)
	defer fcancel()
	x, err := workloadapi.FetchX509Context(fctx, workloadapi.WithAddr("unix://"+p.AgentSocket),
		workloadapi.WithDialOptions(grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsg))))
	if err != nil {
		return fmt.Errorf("fetch all svids with go-spiffe: %w", err)
	}
	fmt.Printf("scale: one go-spiffe FetchX509Context returned %d SVIDs in %s\n", len(x.SVIDs), time.Since(fstart).Round(time.Millisecond))
	return nil
}
