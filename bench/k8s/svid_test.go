//go:build k8s && linux

package k8s_test

// BenchmarkPodToSVID measures the whole path of issue 14 with the real binaries: a pod is created through
// the API server → `kith server`'s KithIdentity controller writes its entry → the Sync stream pushes it to
// the `kith agent` of the pod's node (attested with k8s_psat) → the agent mints the SVID → a real process
// placed in the pod's cgroup fetches it over the Workload API with go-spiffe, attested by the k8s workload
// attestor through a kubelet serving /pods. It needs root and a writable cgroup hierarchy (the workload
// processes are moved into real kubepods cgroups, as a container runtime does).

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kithid/kith/attestation/workload/k8s/kubelettest"
	"github.com/kithid/kith/internal/kubernetes/apis/v1alpha1"
	"github.com/kithid/kith/internal/kubernetes/kubetest"
)

// workloadEnv, when set, makes the test binary a workload: it waits for a line on stdin, then fetches its
// X.509-SVID from the agent socket the variable names until it has one, and prints its SPIFFE ID.
const workloadEnv = "KITH_BENCH_WORKLOAD_SOCKET"

// workloadOutEnv, when set, is a directory the workload writes its SVID, key and bundle into.
const workloadOutEnv = "KITH_BENCH_WORKLOAD_OUT"

func TestMain(m *testing.M) {
	if sock := os.Getenv(workloadEnv); sock != "" {
		os.Exit(workload(sock))
	}
	os.Exit(m.Run())
}

func workload(sock string) int {
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for attempts := 1; ; attempts++ {
		x, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr("unix://"+sock))
		if err == nil {
			svid := x.DefaultSVID()
			if dir := os.Getenv(workloadOutEnv); dir != "" {
				// Hand the SVID to the test, as a sidecar would use it: chain, key (0600), bundle.
				certs, key, err := svid.Marshal()
				if err != nil {
					fmt.Printf("error %v\n", err)
					return 1
				}
				b, _ := x.Bundles.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
				roots, _ := b.Marshal()
				for name, data := range map[string][]byte{"svid.pem": certs, "key.pem": key, "bundle.pem": roots} {
					if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
						fmt.Printf("error %v\n", err)
						return 1
					}
				}
			}
			fmt.Printf("ok %s %d\n", svid.ID, attempts)
			return 0
		}
		if ctx.Err() != nil {
			fmt.Printf("error %v\n", err)
			return 1
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// cgroups places processes in pod cgroups of the first writable hierarchy: cgroup v1's pids controller
// (cgroupfs driver paths, as Docker and containerd write them) or the cgroup v2 root (systemd driver).
type cgroups struct{ v1 bool }

func findCgroups(tb testing.TB) cgroups {
	if os.Geteuid() != 0 {
		tb.Fatal("BenchmarkPodToSVID moves workload processes into pod cgroups as a container runtime does: run it as root")
	}
	if st, err := os.Stat("/sys/fs/cgroup/pids"); err == nil && st.IsDir() {
		return cgroups{v1: true}
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return cgroups{}
	}
	tb.Fatal("no writable cgroup hierarchy at /sys/fs/cgroup/pids (v1) or /sys/fs/cgroup (v2)")
	return cgroups{}
}

// place moves pid into the cgroup of container id of pod uid and returns a func that removes it.
func (g cgroups) place(tb testing.TB, uid, id string, pid int) func() {
	var dirs []string
	if g.v1 {
		dirs = []string{"/sys/fs/cgroup/pids/kubepods", "besteffort", "pod" + uid, id}
	} else {
		u := strings.ReplaceAll(uid, "-", "_")
		dirs = []string{"/sys/fs/cgroup/kubepods.slice", "kubepods-besteffort.slice", "kubepods-besteffort-pod" + u + ".slice", "cri-containerd-" + id + ".scope"}
	}
	leaf := filepath.Join(dirs...)
	if err := os.MkdirAll(leaf, 0o755); err != nil {
		tb.Fatalf("make the pod's cgroup: %v", err)
	}
	if err := os.WriteFile(filepath.Join(leaf, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		tb.Fatalf("move pid %d into %s: %v", pid, leaf, err)
	}
	return func() {
		// Leaf first; the shared parents go when they are empty.
		for i := len(dirs); i >= 3; i-- {
			_ = os.Remove(filepath.Join(dirs[:i]...))
		}
	}
}

func freePort(tb testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// kithBin is $KITH_BIN, or kith built into a temp dir.
func kithBin(tb testing.TB) string {
	if b := os.Getenv("KITH_BIN"); b != "" {
		return b
	}
	out := filepath.Join(tb.TempDir(), "kith")
	cmd := exec.Command("go", "build", "-o", out, "github.com/kithid/kith/cmd/kith")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build kith: %v\n%s", err, b)
	}
	return out
}

// start runs kith with args until tb ends, its log in dir/name.log.
func start(tb testing.TB, bin, dir, name string, args ...string) {
	log, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		log.Close()
	})
}

func waitFor(tb testing.TB, what string, d time.Duration, ok func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// e2e is a cluster with `kith server` (controllers on) and one `kith agent` on node-a.
type e2e struct {
	c      *kubetest.Cluster
	client kubernetes.Interface
	cg     cgroups
	sock   string
	authz  string // the agent's ext_authz socket
	bin    string
	self   string
}

func setupE2E(b testing.TB) *e2e {
	cg := findCgroups(b)
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	bin := kithBin(b)
	c := kubetest.Start(b)
	if _, err := envtest.InstallCRDs(c.Config, envtest.CRDInstallOptions{
		Paths: []string{filepath.Join("..", "..", "deploy", "kubernetes", "base", "crds"),
			// The SMI and Istio resources the mesh policy controller follows (BenchmarkMeshPolicyChangeToAgent).
			filepath.Join("..", "..", "internal", "kubernetes", "meshpolicy", "testdata", "crds.yaml")}, ErrorIfPathMissing: true}); err != nil {
		b.Fatal(err)
	}
	own := rest.CopyConfig(c.Config)
	own.QPS, own.Burst = 1000, 2000
	e := &e2e{c: c, client: kubernetes.NewForConfigOrDie(own), cg: cg, bin: bin, self: self}
	c.Node(b, "node-a", nil)
	c.Namespace(b, "kith", nil)
	c.Namespace(b, "shop", map[string]string{"kith.io/enabled": "true"})
	c.ServiceAccount(b, "shop", "web")
	c.ServiceAccount(b, "shop", "api")
	agentPod := c.Pod(b, kubetest.PodSpec{Namespace: "kith", Name: "kith-agent-a", ServiceAccount: "kith-agent", Node: "node-a"})

	dir := b.TempDir()
	tokenFile := filepath.Join(dir, "agent-token")
	if err := os.WriteFile(tokenFile, []byte(c.Token(b, "kith", "kith-agent", kubetest.TokenOptions{Pod: agentPod})), 0o600); err != nil {
		b.Fatal(err)
	}
	kubeletToken := c.Token(b, "kith", "kith-agent", kubetest.TokenOptions{Audience: "kubelet", Pod: agentPod})
	kubeletTokenFile := filepath.Join(dir, "kubelet-token")
	if err := os.WriteFile(kubeletTokenFile, []byte(kubeletToken), 0o600); err != nil {
		b.Fatal(err)
	}

	// The kubelet answers /pods from memory, as a real one does: an informer on the pods of node-a.
	f := informers.NewSharedInformerFactoryWithOptions(e.client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = "spec.nodeName=node-a"
	}))
	pods := f.Core().V1().Pods().Lister()
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
	kl := kubelettest.Start(b, kubelettest.Config{
		Authenticate: func(_ context.Context, tok string) error {
			if tok != kubeletToken {
				return errors.New("invalid bearer token")
			}
			return nil
		},
		Pods: func(context.Context) ([]corev1.Pod, error) {
			ps, err := pods.List(labels.Everything())
			if err != nil {
				return nil, err
			}
			out := make([]corev1.Pod, len(ps))
			for i, p := range ps {
				out[i] = *p
			}
			return out, nil
		},
	})

	grpcAddr, httpAddr := freePort(b), freePort(b)
	serverDir := filepath.Join(dir, "server")
	serverYAML := filepath.Join(dir, "server.yaml")
	if err := os.WriteFile(serverYAML, fmt.Appendf(nil, `trust_domain: kith.test
data_dir: %s
listen: {grpc: "%s", http: "%s"}
log: {level: warn}
node_attestors:
  k8s_psat:
    clusters:
      - name: bench
        kubeconfig: %s
        service_accounts: [kith:kith-agent]
        controllers: true
`, serverDir, grpcAddr, httpAddr, c.KubeConfigFile(b)), 0o600); err != nil {
		b.Fatal(err)
	}
	start(b, bin, dir, "server", "server", "-c", serverYAML)
	waitFor(b, "kith server ready", 30*time.Second, func() bool {
		r, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == http.StatusOK
	})
	bundle := filepath.Join(dir, "bundle.pem")
	out, err := exec.Command(bin, "--admin-socket", filepath.Join(serverDir, "admin.sock"), "bundle", "show").Output()
	if err != nil {
		b.Fatalf("kith bundle show: %v", err)
	}
	if err := os.WriteFile(bundle, out, 0o644); err != nil {
		b.Fatal(err)
	}

	e.sock = filepath.Join(dir, "agent", "agent.sock")
	e.authz = filepath.Join(dir, "agent", "authz.sock")
	agentYAML := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(agentYAML, fmt.Appendf(nil, `server: "%s"
trust_domain: kith.test
trust_bundle: %s
data_dir: %s
socket: %s
authz_socket: %s
authz_listen: "off"
log: {level: warn}
node_attestor: k8s_psat
k8s_psat: {cluster: bench, token_path: %s}
workload_attestors: [k8s]
k8s: {kubelet_url: "%s", kubelet_ca: %s, token_path: %s}
`, grpcAddr, bundle, filepath.Join(dir, "agent-data"), e.sock, e.authz, tokenFile, kl.URL, kl.CAFile, kubeletTokenFile), 0o600); err != nil {
		b.Fatal(err)
	}
	start(b, bin, dir, "agent", "agent", "-c", agentYAML)
	waitFor(b, "kith agent socket", 30*time.Second, func() bool { _, err := os.Stat(e.sock); return err == nil })

	dyn := dynamic.NewForConfigOrDie(c.Config)
	id := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kith.io/v1alpha1", "kind": "KithIdentity", "metadata": map[string]any{"name": "all"},
		"spec": map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kith.io/enabled": "true"}}}}}
	if _, err := dyn.Resource(v1alpha1.KithIdentities).Create(context.Background(), id, metav1.CreateOptions{}); err != nil {
		b.Fatalf("create KithIdentity: %v", err)
	}
	b.Cleanup(func() {
		if b.Failed() {
			for _, n := range []string{"server", "agent"} {
				if data, err := os.ReadFile(filepath.Join(dir, n+".log")); err == nil {
					b.Logf("%s log:\n%s", n, data)
				}
			}
		}
	})
	return e
}

// child is a workload process waiting for its cue.
type child struct {
	cmd   *exec.Cmd
	cue   io.WriteCloser
	lines *bufio.Reader
}

func (e *e2e) spawn(tb testing.TB, env ...string) *child {
	cmd := exec.Command(e.self, "-test.run=^$")
	cmd.Env = append(append(os.Environ(), workloadEnv+"="+e.sock), env...)
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	w := &child{cmd: cmd, cue: in, lines: bufio.NewReader(out)}
	if l, err := w.lines.ReadString('\n'); err != nil || l != "ready\n" {
		tb.Fatalf("workload process: %q, %v", l, err)
	}
	return w
}

// podToSVID creates pod name and returns the time from its create call returning to its workload holding
// the pod's SVID, and how many Workload API calls the workload made.
func (e *e2e) podToSVID(tb testing.TB, w *child, name string) (time.Duration, int) {
	return e.podOf(tb, w, name, "web")
}

// podOf is podToSVID for a pod of service account sa.
func (e *e2e) podOf(tb testing.TB, w *child, name, sa string) (time.Duration, int) {
	defer func() { w.cmd.Process.Kill(); w.cmd.Wait() }()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name},
		Spec: corev1.PodSpec{ServiceAccountName: sa, NodeName: "node-a",
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
	}
	created, err := e.client.CoreV1().Pods("shop").Create(context.Background(), p, metav1.CreateOptions{})
	if err != nil {
		tb.Fatalf("create pod: %v", err)
	}
	t0 := time.Now()
	// What the kubelet does next: start the container and write its ID into the pod's status.
	sum := sha256.Sum256([]byte(created.UID))
	cid := fmt.Sprintf("%x", sum)
	created.Status.Phase = corev1.PodRunning
	created.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Image: "registry.example/app:1", ContainerID: "containerd://" + cid, Ready: true}}
	if _, err := e.client.CoreV1().Pods("shop").UpdateStatus(context.Background(), created, metav1.UpdateOptions{}); err != nil {
		tb.Fatalf("update pod status: %v", err)
	}
	defer e.cg.place(tb, string(created.UID), cid, w.cmd.Process.Pid)()
	if _, err := io.WriteString(w.cue, "go\n"); err != nil {
		tb.Fatal(err)
	}
	line, err := w.lines.ReadString('\n')
	took := time.Since(t0)
	f := strings.Fields(line)
	if want := "spiffe://kith.test/ns/shop/sa/" + sa; err != nil || len(f) != 3 || f[0] != "ok" || f[1] != want {
		tb.Fatalf("workload of pod %s: %q, %v; want its SVID %s", name, line, err, want)
	}
	n, _ := strconv.Atoi(f[2])
	return took, n
}

// BenchmarkPodToSVID: pod created (the API call returned) → a process in it holds its X.509-SVID from the
// agent, over 100 pods one after another and 100 pods 10 at a time.
func BenchmarkPodToSVID(b *testing.B) {
	const n = 100
	e := setupE2E(b)
	// Warm up: the agent attests, the first pods go through every path once.
	for i := range 3 {
		e.podToSVID(b, e.spawn(b), fmt.Sprintf("warm-%d", i))
	}
	b.ResetTimer()
	for it := range b.N {
		for _, c := range []int{1, 10} {
			ds := make([]time.Duration, n)
			calls := make([]int, n)
			var wg sync.WaitGroup
			for w := range c {
				wg.Go(func() {
					for i := w; i < n; i += c {
						ds[i], calls[i] = e.podToSVID(b, e.spawn(b), fmt.Sprintf("p%d-c%d-%d", it, c, i))
					}
				})
			}
			wg.Wait()
			total := 0
			for _, k := range calls {
				total += k
			}
			b.Logf("%d pods, %d at a time, create returned → workload holds its SVID: p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms; %.1f Workload API calls per workload (load average %s)",
				n, c, ms(percentile(ds, .5)), ms(percentile(ds, .9)), ms(percentile(ds, .99)), ms(percentile(ds, 1)), float64(total)/n, loadavg())
			if it == 0 {
				b.ReportMetric(ms(percentile(ds, .5)), fmt.Sprintf("p50-ms-c%d", c))
				b.ReportMetric(ms(percentile(ds, .99)), fmt.Sprintf("p99-ms-c%d", c))
			}
		}
	}
}

// TestK8sPodGetsItsSVIDThroughTheAgent is the benchmark's path as a test (make test-k8s): the real server and
// agent binaries, an agent attested by its bound service-account token, three pods whose processes get
// their SVIDs through the k8s workload attestor; and a process in no pod gets none.
func TestK8sPodGetsItsSVIDThroughTheAgent(t *testing.T) {
	e := setupE2E(t)
	for i := range 3 {
		took, calls := e.podToSVID(t, e.spawn(t), fmt.Sprintf("web-%d", i))
		t.Logf("pod web-%d: SVID %s after its creation, %d Workload API calls", i, took.Round(time.Millisecond), calls)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+e.sock)); err == nil {
		t.Errorf("a process in no pod got %s", svid.ID)
	}
}

// TestK8sTwoPodsCallEachOtherWithAKithGrant is docs/kubernetes.md's example without Envoy: two pods' processes
// get their SVIDs from the agent, do mutual TLS with them (each verifying the other to the bundle the agent
// gave it), and the agent's ext_authz — asked as the callee's sidecar asks, with the caller's ID from the
// handshake — allows the call only while a KithGrant says so, and one direction only.
func TestK8sTwoPodsCallEachOtherWithAKithGrant(t *testing.T) {
	e := setupE2E(t)
	webDir, apiDir := t.TempDir(), t.TempDir()
	e.podOf(t, e.spawn(t, workloadOutEnv+"="+webDir), "web-1", "web")
	e.podOf(t, e.spawn(t, workloadOutEnv+"="+apiDir), "api-1", "api")
	web, api := spiffeid.RequireFromString("spiffe://kith.test/ns/shop/sa/web"), spiffeid.RequireFromString("spiffe://kith.test/ns/shop/sa/api")
	for _, f := range []string{"svid.pem", "key.pem", "bundle.pem"} {
		if st, err := os.Stat(filepath.Join(webDir, f)); err != nil || st.Size() == 0 {
			t.Fatalf("the web workload wrote no %s: %v", f, err)
		}
	}
	caller := mtls(t, webDir, apiDir, web, api)
	if caller != web {
		t.Fatalf("api saw caller %s, want %s", caller, web)
	}

	allowed := func(from, to spiffeid.ID, method, path string) bool {
		ok, err := authzAllowed(e.authz, from, to, method, path)
		if err != nil {
			t.Fatalf("ext_authz: %v", err)
		}
		return ok
	}
	if allowed(caller, api, "GET", "/orders/1") {
		t.Fatal("web may call api before any grant")
	}
	dyn := dynamic.NewForConfigOrDie(e.c.Config)
	kg := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "kith.io/v1alpha1", "kind": "KithGrant",
		"metadata": map[string]any{"name": "web-to-api", "namespace": "shop"},
		"spec": map[string]any{"caller": map[string]any{"namespace": "shop", "serviceAccount": "web"},
			"target": map[string]any{"namespace": "shop", "serviceAccount": "api"}, "methods": []any{"GET"}, "paths": []any{"/orders/*"}}}}
	if _, err := dyn.Resource(v1alpha1.KithGrants).Namespace("shop").Create(context.Background(), kg, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the KithGrant enforced by the agent", 20*time.Second, func() bool { return allowed(caller, api, "GET", "/orders/1") })
	for _, c := range []struct {
		from, to     spiffeid.ID
		method, path string
	}{{api, web, "GET", "/orders/1"}, {web, api, "POST", "/orders/1"}, {web, api, "GET", "/admin"}} {
		if allowed(c.from, c.to, c.method, c.path) {
			t.Errorf("%s may %s %s on %s: the grant is web → api, GET /orders/* only", c.from, c.method, c.path, c.to)
		}
	}
	if err := dyn.Resource(v1alpha1.KithGrants).Namespace("shop").Delete(context.Background(), "web-to-api", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deleted KithGrant revoked on the agent", 20*time.Second, func() bool { return !allowed(caller, api, "GET", "/orders/1") })
}

// mtls runs a TLS handshake from the client's SVID (in dir cdir) to the server's (sdir), each side
// verifying the other to its own bundle and ID, and returns the client ID the server saw.
func mtls(t *testing.T, cdir, sdir string, client, server spiffeid.ID) spiffeid.ID {
	load := func(dir string) (*x509svid.SVID, *x509bundle.Bundle) {
		s, err := x509svid.Load(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := x509bundle.Load(s.ID.TrustDomain(), filepath.Join(dir, "bundle.pem"))
		if err != nil {
			t.Fatal(err)
		}
		return s, b
	}
	csvid, cb := load(cdir)
	ssvid, sb := load(sdir)
	l, err := tls.Listen("tcp", "127.0.0.1:0", tlsconfig.MTLSServerConfig(ssvid, sb, tlsconfig.AuthorizeID(client)))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	seen := make(chan spiffeid.ID, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			seen <- spiffeid.ID{}
			return
		}
		defer conn.Close()
		tc := conn.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			seen <- spiffeid.ID{}
			return
		}
		id, _ := x509svid.IDFromCert(tc.ConnectionState().PeerCertificates[0])
		tc.Write([]byte("ok"))
		seen <- id
	}()
	conn, err := tls.Dial("tcp", l.Addr().String(), tlsconfig.MTLSClientConfig(csvid, cb, tlsconfig.AuthorizeID(server)))
	if err != nil {
		t.Fatalf("mTLS from %s to %s: %v", client, server, err)
	}
	defer conn.Close()
	if _, err := io.ReadAll(io.LimitReader(conn, 2)); err != nil {
		t.Fatal(err)
	}
	return <-seen
}

// authzAllowed asks the agent's ext_authz, as Envoy would for an mTLS request from caller to target.
func authzAllowed(socket string, caller, target spiffeid.ID, method, path string) (bool, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return false, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Principal: caller.String()},
		Destination: &authv3.AttributeContext_Peer{Principal: target.String()},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: path, Scheme: "https", Protocol: "HTTP/2",
			Headers: map[string]string{":method": method, ":path": path},
		}},
	}})
	if err != nil {
		return false, err
	}
	return resp.GetStatus().GetCode() == 0, nil
}
