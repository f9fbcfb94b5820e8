// Command ha measures several `kith server` processes on one PostgreSQL (docs/ha.md): a throwaway
// PostgreSQL cluster (internal/store/postgres/pgtest; binaries from scripts/components/postgres.sh), the
// real servers and agent as child processes, this process as the workload (a go-spiffe
// WatchX509Context on the agent socket) and admin client. It prints:
//
//  1. entry created on server A → SVID in a workload of an agent synced with server B (p50/p99);
//  2. failover: the server the agent syncs with is killed (SIGKILL); an entry created on another server
//     reaches the workload — the time from the kill, over several kills (p99);
//  3. BatchCreateEntries of 10,000 entries, on PostgreSQL and on SQLite;
//  4. minting throughput through the admin API (8 callers), on PostgreSQL and on SQLite, same run.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/bench/internal/kithenv"
	"github.com/kithid/kith/bench/internal/latency"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/internal/store/postgres/pgtest"
)

func main() {
	bin := flag.String("kith", "bin/kith", "kith binary")
	trials := flag.Int("trials", 200, "entries created on server A for the cross-server propagation")
	kills := flag.Int("kills", 20, "servers killed for the failover time")
	batch := flag.Int("batch", 10000, "entries in the BatchCreateEntries call")
	mint := flag.Duration("mint", 5*time.Second, "minting duration per store")
	flag.Parse()
	if err := run(*bin, *trials, *kills, *batch, *mint); err != nil {
		fmt.Fprintln(os.Stderr, "ha:", err)
		os.Exit(1)
	}
}

func run(bin string, trials, kills, batch int, mintFor time.Duration) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pg, err := pgtest.New(pgtest.Options{})
	if err != nil {
		return err
	}
	defer pg.Destroy()
	dir, err := os.MkdirTemp("", "kith-bench-ha-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	kek := filepath.Join(dir, "kek")
	secret := make([]byte, 32)
	rand.Read(secret)
	if err := os.WriteFile(kek, []byte(base64.StdEncoding.EncodeToString(secret)), 0o600); err != nil {
		return err
	}
	pgEnv := func() ([]string, error) {
		url, err := pg.CreateDatabase(ctx)
		return []string{"KITH_STORE_URL=" + url, "KITH_CA_KEK_FILE=" + kek}, err
	}

	env, err := pgEnv()
	if err != nil {
		return err
	}
	if err := propagation(ctx, bin, env, trials); err != nil {
		return fmt.Errorf("propagation: %w", err)
	}
	if env, err = pgEnv(); err != nil {
		return err
	}
	if err := failover(ctx, bin, env, kills); err != nil {
		return fmt.Errorf("failover: %w", err)
	}
	if env, err = pgEnv(); err != nil {
		return err
	}
	for _, st := range []struct {
		name string
		env  []string
	}{{"sqlite", nil}, {"postgres", env}} {
		h, err := kithenv.StartHA(ctx, kithenv.HAOptions{Bin: bin, Env: st.env, NoAgent: true})
		if err != nil {
			return err
		}
		err = bulk(ctx, st.name, h.Servers[0].Admin, batch)
		if err == nil {
			err = minting(ctx, st.name, h.Servers[0].Admin, mintFor)
		}
		h.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// watcher records when each SPIFFE ID first reaches the workload.
type watcher struct {
	mu   sync.Mutex
	seen map[string]time.Time
	wait map[string]chan struct{}
}

func newWatcher() *watcher {
	return &watcher{seen: map[string]time.Time{}, wait: map[string]chan struct{}{}}
}

func (w *watcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
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

func (w *watcher) OnX509ContextWatchError(error) {}

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

var uid = "unix:uid:" + strconv.Itoa(os.Getuid())

func createEntry(ctx context.Context, admin adminv1.AdminServiceClient, id string) error {
	_, err := admin.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: &adminv1.Entry{
		SpiffeId: id, ParentId: kithenv.AgentID.String(), Selectors: []string{uid}}})
	return err
}

// watch starts the workload's watch and waits for a first entry (made on admin) to arrive.
func watch(ctx context.Context, h *kithenv.HA, admin adminv1.AdminServiceClient) (*watcher, func(), error) {
	w := newWatcher()
	base := "spiffe://" + kithenv.TrustDomain + "/bench/base"
	seen := w.expect(base)
	if err := createEntry(ctx, admin, base); err != nil {
		return nil, nil, err
	}
	client, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+h.AgentSocket))
	if err != nil {
		return nil, nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	go client.WatchX509Context(wctx, w)
	select {
	case <-seen:
	case <-time.After(30 * time.Second):
		cancel()
		client.Close()
		return nil, nil, errors.New("the first entry never reached the workload")
	}
	return w, func() { cancel(); client.Close() }, nil
}

func propagation(ctx context.Context, bin string, env []string, trials int) error {
	h, err := kithenv.StartHA(ctx, kithenv.HAOptions{Bin: bin, Servers: 2, Env: env})
	if err != nil {
		return err
	}
	defer h.Close()
	a := h.Servers[0].Admin // the agent syncs with the last server, B
	w, stop, err := watch(ctx, h, a)
	if err != nil {
		return err
	}
	defer stop()
	var lat []time.Duration
	for i := range trials {
		id := fmt.Sprintf("spiffe://%s/bench/ha/%d", kithenv.TrustDomain, i)
		seen := w.expect(id)
		start := time.Now()
		if err := createEntry(ctx, a, id); err != nil {
			return err
		}
		select {
		case <-seen:
		case <-time.After(30 * time.Second):
			return fmt.Errorf("entry %s never reached the workload", id)
		}
		lat = append(lat, w.at(id).Sub(start))
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Printf("ha: entry created on server A → SVID in the workload of an agent of server B, %d trials: %s\n", trials, latency.Summarize(lat))
	return nil
}

var (
	startedOn = regexp.MustCompile(`kith agent started.* server=([0-9.:]+)`)
	movedTo   = regexp.MustCompile(`moving to the next one.* to=([0-9.:]+)`)
)

// current is the server the agent syncs with, from its log.
func current(h *kithenv.HA) (int, error) {
	log := h.AgentLog()
	addr := ""
	if m := startedOn.FindStringSubmatch(log); m != nil {
		addr = m[1]
	}
	if ms := movedTo.FindAllStringSubmatch(log, -1); len(ms) > 0 {
		addr = ms[len(ms)-1][1]
	}
	for i, s := range h.Servers {
		if s.GRPCAddr == addr {
			return i, nil
		}
	}
	return 0, fmt.Errorf("cannot tell which server the agent syncs with (%q)", addr)
}

func failover(ctx context.Context, bin string, env []string, kills int) error {
	h, err := kithenv.StartHA(ctx, kithenv.HAOptions{Bin: bin, Servers: 3, Env: env, AgentServers: true})
	if err != nil {
		return err
	}
	defer h.Close()
	w, stop, err := watch(ctx, h, h.Servers[0].Admin)
	if err != nil {
		return err
	}
	defer stop()
	var lat []time.Duration
	for k := range kills {
		time.Sleep(300 * time.Millisecond) // the agent is synced
		i, err := current(h)
		if err != nil {
			return err
		}
		other := h.Servers[(i+1)%len(h.Servers)].Admin
		id := fmt.Sprintf("spiffe://%s/bench/failover/%d", kithenv.TrustDomain, k)
		seen := w.expect(id)
		h.Kill(i)
		killed := time.Now()
		if err := createEntry(ctx, other, id); err != nil {
			return err
		}
		select {
		case <-seen:
		case <-time.After(30 * time.Second):
			return fmt.Errorf("after kill %d the agent never got an entry made on another server", k)
		}
		lat = append(lat, w.at(id).Sub(killed))
		if err := h.Restart(ctx, i); err != nil {
			return err
		}
	}
	fmt.Printf("ha: failover, SIGKILL of the agent's server → an entry made on another server in the workload, %d kills: %s\n", kills, latency.Summarize(lat))
	return nil
}

func bulk(ctx context.Context, store string, admin adminv1.AdminServiceClient, n int) error {
	es := make([]*adminv1.Entry, n)
	for i := range es {
		es[i] = &adminv1.Entry{SpiffeId: fmt.Sprintf("spiffe://%s/bench/bulk/%d", kithenv.TrustDomain, i),
			ParentId: kithenv.AgentID.String(), Selectors: []string{fmt.Sprintf("unix:uid:%d", 100000+i)}}
	}
	start := time.Now()
	if _, err := admin.BatchCreateEntries(ctx, &adminv1.BatchCreateEntriesRequest{Entries: es}); err != nil {
		return fmt.Errorf("%s: BatchCreateEntries: %w", store, err)
	}
	took := time.Since(start)
	fmt.Printf("ha: BatchCreateEntries of %d entries on %s: %s (%.0f entries/s)\n", n, store, took.Round(time.Millisecond), float64(n)/took.Seconds())
	return nil
}

func minting(ctx context.Context, store string, admin adminv1.AdminServiceClient, d time.Duration) error {
	var n atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for c := range 8 {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				id := fmt.Sprintf("spiffe://%s/bench/mint/%d/%d", kithenv.TrustDomain, c, i)
				_, csr, err := ca.NewKeyAndCSR(spiffeid.RequireFromString(id))
				if err == nil {
					_, err = admin.MintX509SVID(ctx, &adminv1.MintX509SVIDRequest{SpiffeId: id, Csr: csr})
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return fmt.Errorf("%s: mint: %w", store, err)
	}
	fmt.Printf("ha: minting through the admin API on %s, 8 callers for %s: %.0f SVIDs/s\n", store, d, float64(n.Load())/d.Seconds())
	return nil
}
