// Command console measures the web console: the access graph's first render in headless Chromium with
// -identities identities and -grants grants (the 500 / 5,000), the page's weight, the time to
// expand every group, and what -consoles open consoles (their server-sent event streams) cost the server,
// idle and while grants change. A real `kith server` runs as a child process on a temp dir, with its HTTP
// listener on loopback (so the console is on); the data is made through the admin socket.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/bench/internal/kithenv"
)

func main() {
	bin := flag.String("kith", "bin/kith", "kith binary")
	chromium := flag.String("chromium", os.Getenv("KITH_CHROMIUM"), "Chromium binary (scripts/components/chromium.sh prints it)")
	identities := flag.Int("identities", 500, "identities (entries)")
	grants := flag.Int("grants", 5000, "grants between them")
	namespaces := flag.Int("namespaces", 25, "namespaces the identities are spread over")
	loads := flag.Int("loads", 5, "first renders to measure")
	consoles := flag.Int("consoles", 50, "open consoles (event streams) for the server-cost measurement")
	changes := flag.Int("changes", 100, "grant changes made while the consoles are open")
	flag.Parse()
	if *chromium == "" {
		fmt.Fprintln(os.Stderr, "console: -chromium (or KITH_CHROMIUM) is required: run ./scripts/components/chromium.sh, which installs Debian's chromium and prints its path")
		os.Exit(2)
	}
	if err := run(*bin, *chromium, *identities, *grants, *namespaces, *loads, *consoles, *changes); err != nil {
		fmt.Fprintln(os.Stderr, "console:", err)
		os.Exit(1)
	}
}

func id(ns, i int) string {
	return fmt.Sprintf("spiffe://%s/ns/ns%02d/sa/svc%03d", kithenv.TrustDomain, ns, i)
}

func run(bin, chromium string, nIDs, nGrants, nNS, loads, consoles, changes int) error {
	ctx := context.Background()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	httpAddr := l.Addr().String()
	l.Close()
	p, err := kithenv.StartProcesses(ctx, kithenv.Options{Bin: bin, NoAgent: true, HTTPAddr: httpAddr})
	if err != nil {
		return err
	}
	defer p.Close()
	base := "http://" + httpAddr + "/ui/"
	if err := waitHTTP(base); err != nil {
		return err
	}

	// Data: identities spread over namespaces, grants mostly within a namespace (as services are), some across,
	// one in ten time-bound.
	ids := make([]string, nIDs)
	var entries []*adminv1.Entry
	for i := range ids {
		ids[i] = id(i%nNS, i)
		entries = append(entries, &adminv1.Entry{SpiffeId: ids[i], ParentId: kithenv.AgentID.String(),
			Selectors: []string{"unix:uid:" + strconv.Itoa(10000+i)}, Labels: map[string]string{"team": "t" + strconv.Itoa(i%7)}})
	}
	start := time.Now()
	for i := 0; i < len(entries); i += 500 {
		if _, err := p.Admin.BatchCreateEntries(ctx, &adminv1.BatchCreateEntriesRequest{Entries: entries[i:min(i+500, len(entries))]}); err != nil {
			return fmt.Errorf("create entries: %w", err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	seen := map[[2]int]bool{}
	for made := 0; made < nGrants; {
		a := rng.IntN(nIDs)
		b := rng.IntN(nIDs)
		if rng.IntN(10) < 8 { // same namespace
			b = (b/nNS)*nNS + a%nNS
			if b >= nIDs {
				continue
			}
		}
		if a == b || seen[[2]int{a, b}] {
			continue
		}
		seen[[2]int{a, b}] = true
		g := &adminv1.Grant{Caller: ids[a], Target: ids[b]}
		if made%10 == 0 {
			g.ExpiresAt = timestamppb.New(time.Now().Add(time.Duration(1+made%48) * time.Hour))
		}
		if _, err := p.Admin.CreateGrant(ctx, &adminv1.CreateGrantRequest{Grant: g}); err != nil {
			return fmt.Errorf("create grant: %w", err)
		}
		made++
	}
	fmt.Printf("data: %d identities in %d namespaces, %d grants (made in %s)\n", nIDs, nNS, nGrants, time.Since(start).Round(time.Millisecond))

	// Page weight: what the browser downloads for the access graph.
	var total int
	for _, path := range []string{"", "app.css", "app.js", "dom.js", "graph.js", "api/info", "api/graph"} {
		n, err := size(base + path)
		if err != nil {
			return err
		}
		total += n
		fmt.Printf("weight: /ui/%-10s %8.1f KiB\n", path, float64(n)/1024)
	}
	fmt.Printf("weight: total %.1f KiB (no compression; no request leaves the server)\n", float64(total)/1024)

	// First render in headless Chromium: navigation start → the graph drawn (performance mark), each load in a
	// fresh tab of one browser.
	actx, cancelA := chromedp.NewExecAllocator(ctx, chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.WindowSize(1280, 800))
	defer cancelA()
	bctx, cancelB := chromedp.NewContext(actx)
	defer cancelB()
	if err := chromedp.Do(bctx); err != nil {
		return fmt.Errorf("start chromium: %w", err)
	}
	var firsts, expands, fetches []float64
	for i := 0; i < loads; i++ {
		tctx, cancel := chromedp.NewContext(bctx)
		first, expand, fetch, err := load(tctx, base)
		cancel()
		if err != nil {
			return err
		}
		firsts, expands, fetches = append(firsts, first), append(expands, expand), append(fetches, fetch)
	}
	fmt.Printf("first render (clustered view, %d loads): median %.0f ms, max %.0f ms (target ≤ 1000 ms); of which GET /ui/api/graph median %.0f ms\n", loads, median(firsts), maxOf(firsts), median(fetches))
	fmt.Printf("expand every group (%d nodes, all edges drawn): median %.0f ms, max %.0f ms\n", nIDs, median(expands), maxOf(expands))

	// The server's cost of open consoles: CPU (user+system) and memory of the server process, idle for 10 s
	// with no console and with the consoles' event streams open, then while grants change.
	pid := p.Server.Process.Pid
	idle0, err := cpuOver(pid, 10*time.Second)
	if err != nil {
		return err
	}
	m0, _ := kithenv.ReadMemory(pid)
	var received atomic.Int64
	sctx, stopStreams := context.WithCancel(ctx)
	defer stopStreams()
	var wg sync.WaitGroup
	for i := 0; i < consoles; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = stream(sctx, base+"api/events", &received)
		}()
	}
	time.Sleep(time.Second)
	idleN, err := cpuOver(pid, 10*time.Second)
	if err != nil {
		return err
	}
	m1, _ := kithenv.ReadMemory(pid)
	before := cpuTicks(pid)
	t0 := time.Now()
	for i := 0; i < changes; i++ {
		g, err := p.Admin.CreateGrant(ctx, &adminv1.CreateGrantRequest{Grant: &adminv1.Grant{Caller: ids[i%nIDs], Target: ids[(i+1)%nIDs], Reason: "bench"}})
		if err != nil {
			return err
		}
		if _, err := p.Admin.RevokeGrants(ctx, &adminv1.RevokeGrantsRequest{Id: g.GetGrant().GetId()}); err != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(t0)
	busy := ticksToDur(cpuTicks(pid) - before)
	time.Sleep(500 * time.Millisecond)
	stopStreams()
	wg.Wait()
	fmt.Printf("server, no console: %.2f %% of a core idle (10 s), RSS %s\n", idle0*100, kithenv.MiB(m0.RSS))
	fmt.Printf("server, %d open consoles: %.2f %% of a core idle (10 s), RSS %s (+%s)\n", consoles, idleN*100, kithenv.MiB(m1.RSS), kithenv.MiB(m1.RSS-m0.RSS))
	fmt.Printf("server, %d open consoles, %d changes (grant + revoke) in %s: %s CPU in all, %d events delivered (%.1f per console per change)\n",
		consoles, 2*changes, took.Round(time.Millisecond), busy, received.Load(), float64(received.Load())/float64(consoles)/float64(2*changes))
	return nil
}

func load(ctx context.Context, base string) (first, expand, fetch float64, err error) {
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"#/graph")); err != nil {
		return 0, 0, 0, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`(performance.getEntriesByName("kith-graph-drawn")[0] || {startTime: -1}).startTime`))
		if err != nil {
			return 0, 0, 0, err
		}
		if v >= 0 {
			first = v
			break
		}
		if time.Now().After(deadline) {
			text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
			return 0, 0, 0, fmt.Errorf("the graph was not drawn within 30 s; the page shows:\n%s", text)
		}
		time.Sleep(10 * time.Millisecond)
	}
	fetch, err = chromedp.Run(ctx, chromedp.Evaluate[float64](`performance.getEntriesByType("resource").filter(r => r.name.endsWith("/api/graph"))[0].duration`))
	if err != nil {
		return 0, 0, 0, err
	}
	// Expand every group, then wait two animation frames so that layout and paint are in the figure.
	expand, err = chromedp.Run(ctx, chromedp.Evaluate[float64](`new Promise((done) => {
		const t0 = performance.now();
		document.querySelector("#expand-all").click();
		requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t0)));
	})`, chromedp.EvalAwaitPromise))
	return first, expand, fetch, err
}

func waitHTTP(url string) error {
	for i := 0; i < 100; i++ {
		if r, err := http.Get(url); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer 200: is the console on (ui.enabled)?", url)
}

func size(url string) (int, error) {
	r, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if r.StatusCode != 200 {
		return 0, fmt.Errorf("GET %s: %s", url, r.Status)
	}
	return len(b), err
}

// stream reads an event stream until ctx ends, counting "change" events.
func stream(ctx context.Context, url string, n *atomic.Int64) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer r.Body.Close()
	sc := bufio.NewScanner(r.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "event: change") {
			n.Add(1)
		}
	}
	return sc.Err()
}

// cpuTicks is the process's user + system time in clock ticks (/proc/PID/stat).
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

func ticksToDur(t int64) time.Duration { return time.Duration(t) * 10 * time.Millisecond } // USER_HZ = 100

// cpuOver is the share of one core the process used over d.
func cpuOver(pid int, d time.Duration) (float64, error) {
	a := cpuTicks(pid)
	time.Sleep(d)
	return float64(ticksToDur(cpuTicks(pid)-a)) / float64(d), nil
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func maxOf(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}
