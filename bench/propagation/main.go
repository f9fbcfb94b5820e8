// Command propagation measures how long a new registration entry takes to reach the workload: the real
// `kith server` and `kith agent` run as child processes; this process is the workload and keeps one go-spiffe
// workloadapi.WatchX509Context open on the agent socket. Each trial creates an entry for this process's uid
// through the admin API and timestamps the watch update that first carries the new SPIFFE ID.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/bench/internal/kithenv"
	"github.com/kithid/kith/bench/internal/latency"
)

func main() {
	bin := flag.String("kith", "bin/kith", "kith binary")
	trials := flag.Int("trials", 200, "entries to create, one at a time")
	flag.Parse()
	if err := run(*bin, *trials); err != nil {
		fmt.Fprintln(os.Stderr, "propagation:", err)
		os.Exit(1)
	}
}

// watcher records when each SPIFFE ID first appears in the watched X.509 context.
type watcher struct {
	mu    sync.Mutex
	seen  map[string]time.Time
	wait  map[string]chan struct{}
	errs  int
	count int
}

func (w *watcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.count++
	for _, s := range c.SVIDs {
		id := s.ID.String()
		if _, ok := w.seen[id]; ok {
			continue
		}
		w.seen[id] = now
		if ch, ok := w.wait[id]; ok {
			close(ch)
			delete(w.wait, id)
		}
	}
}

func (w *watcher) OnX509ContextWatchError(error) {
	w.mu.Lock()
	w.errs++
	w.mu.Unlock()
}

// expect returns a channel closed once id is seen.
func (w *watcher) expect(id string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := make(chan struct{})
	if _, ok := w.seen[id]; ok {
		close(ch)
		return ch
	}
	w.wait[id] = ch
	return ch
}

func (w *watcher) at(id string) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen[id]
}

func run(bin string, trials int) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := kithenv.StartProcesses(ctx, kithenv.Options{Bin: bin})
	if err != nil {
		return err
	}
	defer p.Close()
	uid := "unix:uid:" + strconv.Itoa(os.Getuid())
	create := func(id string) error {
		_, err := p.Admin.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: &adminv1.Entry{
			SpiffeId: id, ParentId: kithenv.AgentID.String(), Selectors: []string{uid},
		}})
		return err
	}

	w := &watcher{seen: map[string]time.Time{}, wait: map[string]chan struct{}{}}
	// A first entry so the watch has an identity to deliver (an empty one is an error to go-spiffe).
	base := "spiffe://" + kithenv.TrustDomain + "/bench/base"
	baseSeen := w.expect(base)
	if err := create(base); err != nil {
		return fmt.Errorf("create entry: %w", err)
	}
	client, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+p.AgentSocket))
	if err != nil {
		return err
	}
	defer client.Close()
	watchDone := make(chan error, 1)
	go func() { watchDone <- client.WatchX509Context(ctx, w) }()
	select {
	case <-baseSeen:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("the first entry never reached the workload")
	}

	var lat []time.Duration
	for i := range trials {
		id := fmt.Sprintf("spiffe://%s/bench/propagation/%d", kithenv.TrustDomain, i)
		seen := w.expect(id)
		start := time.Now()
		if err := create(id); err != nil {
			return fmt.Errorf("create entry %d: %w", i, err)
		}
		select {
		case <-seen:
		case <-time.After(30 * time.Second):
			return fmt.Errorf("entry %s never reached the workload", id)
		}
		lat = append(lat, w.at(id).Sub(start))
		time.Sleep(5 * time.Millisecond) // let the agent settle, so trials are independent
	}
	w.mu.Lock()
	updates, errs := w.count, w.errs
	w.mu.Unlock()
	fmt.Printf("propagation: entry created (admin API) → SVID in the workload's open WatchX509Context, %d trials (the workload holds 1 → %d SVIDs): %s\n",
		trials, trials+1, latency.Summarize(lat))
	fmt.Printf("propagation: %d watch updates, %d watch errors\n", updates, errs)
	return nil
}
