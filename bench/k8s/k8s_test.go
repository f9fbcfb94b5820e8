//go:build k8s

// Package k8s holds the Kubernetes benchmarks of issue 14: a real kube-apiserver and etcd (kubetest,
// envtest), the identity controller in this process writing to a SQLite store, and pods created through the
// API. Run them with `./bench/run.sh k8s` (it builds the API server first with scripts/components/kube.sh).
package k8s_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kithid/kith/internal/kubernetes/apis/v1alpha1"
	"github.com/kithid/kith/internal/kubernetes/identity"
	"github.com/kithid/kith/internal/kubernetes/kubetest"
	"github.com/kithid/kith/internal/store"
	"github.com/kithid/kith/internal/store/sqlite"
)

// stamped is the controller's store, recording when the entry of each pod (by UID) was first written.
type stamped struct {
	identity.Store
	mu   sync.Mutex
	at   map[string]time.Time
	want map[string]chan struct{}
}

func (s *stamped) CreateEntry(ctx context.Context, actor string, e store.Entry) (store.Entry, error) {
	got, err := s.Store.CreateEntry(ctx, actor, e)
	if err == nil {
		now := time.Now()
		for _, sel := range e.Selectors {
			if sel.Key != "pod-uid" {
				continue
			}
			s.mu.Lock()
			if _, ok := s.at[sel.Value]; !ok {
				s.at[sel.Value] = now
				if ch, ok := s.want[sel.Value]; ok {
					close(ch)
				}
			}
			s.mu.Unlock()
		}
	}
	return got, err
}

// wait returns when the entry of pod uid was written, and when.
func (s *stamped) wait(tb testing.TB, uid string) time.Time {
	s.mu.Lock()
	if at, ok := s.at[uid]; ok {
		s.mu.Unlock()
		return at
	}
	ch := make(chan struct{})
	s.want[uid] = ch
	s.mu.Unlock()
	select {
	case <-ch:
	case <-time.After(60 * time.Second):
		tb.Fatalf("no entry for pod %s after 60 s", uid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.at[uid]
}

func (s *stamped) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.at)
}

// counter counts the controller's API requests by verb and resource.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		c.mu.Lock()
		c.n[classify(r)]++
		c.mu.Unlock()
		return rt.RoundTrip(r)
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// classify names a request "verb resource[/subresource]" as the API server's audit log would.
func classify(r *http.Request) string {
	segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case len(segs) >= 2 && segs[0] == "api":
		segs = segs[2:]
	case len(segs) >= 3 && segs[0] == "apis":
		segs = segs[3:]
	default:
		return r.Method + " " + r.URL.Path
	}
	if len(segs) >= 3 && segs[0] == "namespaces" {
		segs = segs[2:]
	}
	if len(segs) == 0 {
		return r.Method + " discovery"
	}
	res := segs[0]
	if len(segs) >= 3 {
		res += "/" + segs[2]
	}
	verb := strings.ToLower(r.Method)
	switch {
	case r.URL.Query().Get("watch") == "true" || r.URL.Query().Get("watch") == "1":
		verb = "watch"
	case r.Method == http.MethodGet && len(segs) == 1:
		verb = "list"
	}
	return verb + " " + res
}

func (c *counter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

type env struct {
	c      *kubetest.Cluster
	client kubernetes.Interface // the benchmark's own, for creating pods
	st     *stamped
	reqs   *counter
	node   string
}

var td = spiffeid.RequireTrustDomainFromString("kith.test")

func setup(b *testing.B, ns string) *env {
	b.Helper()
	c := kubetest.Start(b)
	if _, err := envtest.InstallCRDs(c.Config, envtest.CRDInstallOptions{
		Paths: []string{filepath.Join("..", "..", "deploy", "kubernetes", "base", "crds")}, ErrorIfPathMissing: true}); err != nil {
		b.Fatal(err)
	}
	sq, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(b.TempDir(), "kith.db")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sq.Close() })
	e := &env{c: c, st: &stamped{Store: sq, at: map[string]time.Time{}, want: map[string]chan struct{}{}},
		reqs: &counter{n: map[string]int{}}, node: "node-a"}
	c.Node(b, e.node, nil)
	c.Namespace(b, ns, map[string]string{"kith.io/enabled": "true"})
	c.ServiceAccount(b, ns, "default")

	own := rest.CopyConfig(c.Config)
	own.QPS, own.Burst = 1000, 2000
	e.client = kubernetes.NewForConfigOrDie(own)

	dyn := dynamic.NewForConfigOrDie(c.Config)
	id := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kith.io/v1alpha1", "kind": "KithIdentity", "metadata": map[string]any{"name": "all"},
		"spec": map[string]any{
			"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kith.io/enabled": "true"}},
			"dnsNameTemplates":  []any{"{{.PodName}}.{{.Namespace}}.svc"},
			"ttl":               "30m",
		}}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := dyn.Resource(v1alpha1.KithIdentities).Create(context.Background(), id, metav1.CreateOptions{})
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "could not find the requested resource") || time.Now().After(deadline) {
			b.Fatalf("create KithIdentity: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The controller gets the same client settings as `kith server` (internal/kubernetes/client.go), with
	// every request counted.
	cc := rest.CopyConfig(c.Config)
	cc.QPS, cc.Burst = 50, 100
	cc.Wrap(e.reqs.wrap)
	ctrl, err := identity.New(identity.Config{TrustDomain: td, Cluster: "bench", Dynamic: dynamic.NewForConfigOrDie(cc),
		Store: e.st, StatusDelay: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctrl.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("controller Run: %v", err)
		}
	})
	for !ctrl.Synced() {
		time.Sleep(10 * time.Millisecond)
	}
	return e
}

func (e *env) pod(tb testing.TB, ns, name string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{ServiceAccountName: "default", NodeName: e.node,
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
	}
	got, err := e.client.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{})
	if err != nil {
		tb.Fatalf("create pod %s/%s: %v", ns, name, err)
	}
	return got
}

func percentile(ds []time.Duration, p float64) time.Duration {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	i := int(float64(len(ds))*p+0.5) - 1
	i = max(0, min(i, len(ds)-1))
	return ds[i]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// latency creates n pods with c creators at once and returns, per pod, create returned → entry written.
func (e *env) latency(b *testing.B, ns, prefix string, n, c int) []time.Duration {
	out := make([]time.Duration, n)
	var wg sync.WaitGroup
	for w := range c {
		wg.Go(func() {
			for i := w; i < n; i += c {
				p := e.pod(b, ns, fmt.Sprintf("%s-%d", prefix, i))
				created := time.Now()
				out[i] = e.st.wait(b, string(p.UID)).Sub(created)
			}
		})
	}
	wg.Wait()
	return out
}

// BenchmarkPodToEntry: pod created (the API call returned) → its entry is in the store, over -pods pods
// created one after another, then over as many created by 10 creators at once.
func BenchmarkPodToEntry(b *testing.B) {
	const n = 200
	e := setup(b, "bench")
	e.latency(b, "bench", "warm", 5, 1)
	b.ResetTimer()
	for it := range b.N {
		for _, c := range []int{1, 10} {
			ds := e.latency(b, "bench", fmt.Sprintf("p%d-c%d", it, c), n, c)
			b.Logf("%d pods, %d at a time: p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms (load average %s)", n, c,
				ms(percentile(ds, .5)), ms(percentile(ds, .9)), ms(percentile(ds, .99)), ms(percentile(ds, 1)), loadavg())
			if it == 0 {
				b.ReportMetric(ms(percentile(ds, .5)), fmt.Sprintf("p50-ms-c%d", c))
				b.ReportMetric(ms(percentile(ds, .99)), fmt.Sprintf("p99-ms-c%d", c))
			}
		}
	}
}

// BenchmarkBurst: 5,000 pods created by 16 creators at once → every entry is in the store. Reports the
// time, this process's CPU time (controller, store and the creating clients together) and heap/RSS growth,
// and the API requests the controller made by verb and resource.
func BenchmarkBurst(b *testing.B) {
	const n, creators = 5000, 16
	e := setup(b, "burst")
	for it := range b.N {
		before := e.reqs.snapshot()
		var ru0 syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
		runtime.GC()
		var m0 runtime.MemStats
		runtime.ReadMemStats(&m0)
		rss0 := rss()
		base := e.st.count()
		kids0 := children()

		start := time.Now()
		var wg sync.WaitGroup
		for w := range creators {
			wg.Go(func() {
				for i := w; i < n; i += creators {
					e.pod(b, "burst", fmt.Sprintf("b%d-%d", it, i))
				}
			})
		}
		wg.Wait()
		created := time.Since(start)
		for e.st.count() < base+n {
			if time.Since(start) > 5*time.Minute {
				b.Fatalf("%d of %d entries after 5 minutes", e.st.count()-base, n)
			}
			time.Sleep(5 * time.Millisecond)
		}
		all := time.Since(start)

		var ru1 syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
		var m1 runtime.MemStats
		runtime.ReadMemStats(&m1)
		cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
		after := e.reqs.snapshot()
		var kids []string
		for name, k := range children() {
			kids = append(kids, fmt.Sprintf("%s CPU %.2f s, RSS %.0f MiB", name, k.cpu-kids0[name].cpu, float64(k.rss)/(1<<20)))
		}
		sort.Strings(kids)
		var reqs []string
		for k, v := range after {
			if d := v - before[k]; d > 0 {
				reqs = append(reqs, fmt.Sprintf("%s %d", k, d))
			}
		}
		sort.Strings(reqs)
		b.Logf("%d pods by %d creators: all created in %.2f s, every entry in the store at %.2f s; this process: CPU %.2f s, heap in use %+.1f MiB, RSS %+.1f MiB (now %.1f MiB), peak RSS %.1f MiB; controller API requests during the burst: %s; since start: %v; %s (load average %s)",
			n, creators, created.Seconds(), all.Seconds(), cpu.Seconds(),
			float64(int64(m1.HeapInuse)-int64(m0.HeapInuse))/(1<<20), float64(rss()-rss0)/(1<<20), float64(rss())/(1<<20),
			float64(ru1.Maxrss)/1024, strings.Join(reqs, ", "), after, strings.Join(kids, "; "), loadavg())
		if it == 0 {
			b.ReportMetric(all.Seconds(), "s-all-entries")
			b.ReportMetric(cpu.Seconds(), "cpu-s")
		}
	}
}

type usage struct {
	cpu float64 // seconds
	rss int64   // bytes
}

// children is the CPU time and RSS of this process's child processes (kube-apiserver and etcd) by name.
func children() map[string]usage {
	out := map[string]usage{}
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, d := range dirs {
		data, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		s := string(data)
		open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || closing < 0 {
			continue
		}
		f := strings.Fields(s[closing+1:]) // f[0] is field 3 (state)
		if len(f) < 22 || f[1] != fmt.Sprint(os.Getpid()) {
			continue
		}
		var utime, stime, pages int64
		fmt.Sscan(f[11], &utime)
		fmt.Sscan(f[12], &stime)
		fmt.Sscan(f[21], &pages)
		out[s[open+1:closing]] = usage{cpu: float64(utime+stime) / 100, rss: pages * int64(os.Getpagesize())}
	}
	return out
}

func rss() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			return kb << 10
		}
	}
	return 0
}

func loadavg() string {
	data, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
