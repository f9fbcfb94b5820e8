package k8s

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/peer"
	"github.com/kithid/kith/attestation/procfs"
	"github.com/kithid/kith/attestation/workload/k8s/kubelettest"
)

// procFixture makes a proc root in which pid's cgroup file says cgroup and its stat is the real one (so
// start-time checks see the real process), and returns the root and pid's credentials.
func procFixture(t *testing.T, pid int, cgroup string) (string, peer.Credentials) {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, strconv.Itoa(pid))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(cgroup), 0o644); err != nil {
		t.Fatal(err)
	}
	stat := filepath.Join("/proc", strconv.Itoa(pid), "stat")
	if err := os.Symlink(stat, filepath.Join(dir, "stat")); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(stat)
	if err != nil {
		t.Fatal(err)
	}
	start, err := procfs.ParseStartTime(data)
	if err != nil {
		t.Fatal(err)
	}
	return root, peer.Credentials{PID: int32(pid), StartTime: start}
}

// child starts a real process that lives until the test ends.
func child(t *testing.T) int {
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process.Pid
}

// cgroupOf is a cgroup v2 file (containerd, systemd driver) placing a process in pod uid, container id.
func cgroupOf(uid, id string) string {
	return "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + strings.ReplaceAll(uid, "-", "_") + ".slice/cri-containerd-" + id + ".scope\n"
}

const token = "agent-token"

func tokenFile(t *testing.T, tok string) string {
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func testPod(withStatus bool) corev1.Pod {
	p := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-7d4", UID: types.UID(fixturePod), Labels: map[string]string{"app": "web", "env": "prod"}},
		Spec: corev1.PodSpec{ServiceAccountName: "web", NodeName: "node-1",
			InitContainers: []corev1.Container{{Name: "init", Image: "registry.example/init:1"}},
			Containers:     []corev1.Container{{Name: "web", Image: "registry.example/web:2"}, {Name: "envoy", Image: "envoyproxy/envoy:v1.34"}},
		},
	}
	if withStatus {
		p.Status.ContainerStatuses = []corev1.ContainerStatus{
			{Name: "web", Image: "registry.example/web:2", ContainerID: "containerd://" + fixtureContainer},
			{Name: "envoy", Image: "docker.io/envoyproxy/envoy:v1.34", ContainerID: "containerd://" + strings.Repeat("e", 64)},
		}
	}
	return p
}

// kubelet serves pods; status says, per request number (from 1), whether the pod's status lists its
// containers yet.
func kubelet(t *testing.T, status func(n int64) bool) (*kubelettest.Server, *atomic.Int64) {
	var n atomic.Int64
	k := kubelettest.Start(t, kubelettest.Config{
		Authenticate: func(_ context.Context, tok string) error {
			if tok != token {
				return errors.New("invalid bearer token")
			}
			return nil
		},
		Pods: func(context.Context) ([]corev1.Pod, error) {
			return []corev1.Pod{testPod(status(n.Add(1)))}, nil
		},
	})
	return k, &n
}

func newTestAttestor(t *testing.T, k *kubelettest.Server, root string, mod func(*Config)) *Attestor {
	t.Helper()
	cfg := Config{KubeletURL: k.URL, KubeletCA: k.CAFile, TokenPath: tokenFile(t, token), ProcRoot: root,
		PollInterval: 10 * time.Millisecond, MaxWait: 2 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

var wantSelectors = func() []attestation.Selector {
	s, err := attestation.ParseSelectors([]string{
		"k8s:ns:shop", "k8s:sa:web", "k8s:pod-name:web-7d4", "k8s:pod-uid:" + fixturePod, "k8s:node-name:node-1",
		"k8s:pod-label:app:web", "k8s:pod-label:env:prod",
		"k8s:pod-image:registry.example/init:1", "k8s:pod-image:registry.example/web:2", "k8s:pod-image:envoyproxy/envoy:v1.34",
		"k8s:container-name:web", "k8s:container-image:registry.example/web:2",
	})
	if err != nil {
		panic(err)
	}
	return s
}()

// A container that just started is not in its pod's status yet: the attestor asks again until it is.
func TestAttestWaitsForTheContainerStatus(t *testing.T) {
	k, n := kubelet(t, func(n int64) bool { return n >= 3 })
	root, creds := procFixture(t, os.Getpid(), cgroupOf(fixturePod, fixtureContainer))
	a := newTestAttestor(t, k, root, nil)
	got, err := a.Attest(context.Background(), creds)
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	if diff := cmp.Diff(wantSelectors, got); diff != "" {
		t.Errorf("selectors (-want +got):\n%s", diff)
	}
	if n.Load() != 3 {
		t.Errorf("the kubelet was asked %d times, want 3 (two without the status, one with)", n.Load())
	}
	// A second workload in the same container, and many at once, are answered from the node-local cache.
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := a.Attest(context.Background(), creds); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n.Load() != 3 {
		t.Errorf("the kubelet was asked %d times after cached attestations, want still 3", n.Load())
	}
}

// A pod that started after the cached list was fetched is asked for at once, not a poll interval later:
// the first workload of every new pod would otherwise wait PollInterval (SPIRE's k8s attestor makes it wait
// its poll retry interval, 500 ms by default).
func TestAttestAsksAtOnceWhenTheCachedListPredatesThePod(t *testing.T) {
	var pods atomic.Pointer[[]corev1.Pod]
	first := []corev1.Pod{testPod(true)}
	pods.Store(&first)
	var n atomic.Int64
	k := kubelettest.Start(t, kubelettest.Config{
		Authenticate: func(context.Context, string) error { return nil },
		Pods: func(context.Context) ([]corev1.Pod, error) {
			n.Add(1)
			return *pods.Load(), nil
		},
	})
	// The fixture proc root places this process in the first pod, a child in the second.
	root, creds := procFixture(t, os.Getpid(), cgroupOf(fixturePod, fixtureContainer))
	const secondPod, secondContainer = "6f0e0c3a-1111-4c1e-9d6b-3a3c2f7e9b10", "1111111111111111111111111111111111111111111111111111111111111111"
	childRoot, childCreds := procFixture(t, child(t), cgroupOf(secondPod, secondContainer))
	if err := os.Rename(filepath.Join(childRoot, strconv.Itoa(int(childCreds.PID))), filepath.Join(root, strconv.Itoa(int(childCreds.PID)))); err != nil {
		t.Fatal(err)
	}
	a := newTestAttestor(t, k, root, func(c *Config) { c.PollInterval, c.MaxWait, c.CacheTTL = time.Hour, 5*time.Second, time.Hour })
	if _, err := a.Attest(t.Context(), creds); err != nil {
		t.Fatalf("Attest in the first pod: %v", err)
	}
	second := testPod(true)
	second.Name, second.UID = "web-9f1", types.UID(secondPod)
	second.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "web", Image: "registry.example/web:2", ContainerID: "containerd://" + secondContainer}}
	both := []corev1.Pod{testPod(true), second}
	pods.Store(&both)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second) // far less than the poll interval
	defer cancel()
	got, err := a.Attest(ctx, childCreds)
	if err != nil {
		t.Fatalf("Attest in the second pod: %v (the attestor waited to poll instead of asking at once)", err)
	}
	if !slices.ContainsFunc(got, func(s attestation.Selector) bool { return s.String() == "k8s:pod-uid:"+secondPod }) {
		t.Errorf("selectors %v lack the second pod's UID", got)
	}
	if n.Load() != 2 {
		t.Errorf("the kubelet was asked %d times, want 2 (one list per pod)", n.Load())
	}
}

// Concurrent misses share one request to the kubelet rather than each sending one.
func TestAttestConcurrentMissesShareAFetch(t *testing.T) {
	k, n := kubelet(t, func(int64) bool { return true })
	root, creds := procFixture(t, os.Getpid(), cgroupOf(fixturePod, fixtureContainer))
	a := newTestAttestor(t, k, root, nil)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := a.Attest(context.Background(), creds); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n.Load() != 1 {
		t.Errorf("20 concurrent first attestations made %d requests, want 1", n.Load())
	}
}

func TestAttestRefusals(t *testing.T) {
	otherCA := selfSignedPEM(t)
	tests := []struct {
		name    string
		cgroup  string
		status  func(int64) bool
		mod     func(*Config)
		creds   func(peer.Credentials) peer.Credentials
		wantErr string // "" for no selectors and no error
	}{
		{name: "a host process gets no k8s selectors", cgroup: "0::/user.slice/user-1000.slice/session-3.scope\n"},
		{name: "a container the pod never lists", cgroup: cgroupOf(fixturePod, strings.Repeat("a", 64)),
			wantErr: "pod shop/web-7d4 does not list container " + strings.Repeat("a", 64) + " in its status after 200ms"},
		{name: "a pod the kubelet does not run", cgroup: cgroupOf("00000000-0000-4000-8000-000000000000", fixtureContainer),
			wantErr: "the kubelet lists no pod 00000000-0000-4000-8000-000000000000 after 200ms"},
		{name: "the kubelet refuses the token", mod: func(c *Config) { c.TokenPath = tokenFile(t, "stolen") },
			wantErr: "the kubelet answered 401 Unauthorized to GET /pods: invalid bearer token"},
		{name: "a kubelet whose certificate does not verify", mod: func(c *Config) { c.KubeletCA = otherCA },
			wantErr: "certificate signed by unknown authority"},
		{name: "the pid was reused", creds: func(c peer.Credentials) peer.Credentials { c.StartTime++; return c },
			wantErr: peer.ErrProcessChanged.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.cgroup == "" {
				tt.cgroup = cgroupOf(fixturePod, fixtureContainer)
			}
			if tt.status == nil {
				tt.status = func(int64) bool { return true }
			}
			k, _ := kubelet(t, tt.status)
			root, creds := procFixture(t, os.Getpid(), tt.cgroup)
			if tt.creds != nil {
				creds = tt.creds(creds)
			}
			a := newTestAttestor(t, k, root, func(c *Config) {
				c.MaxWait = 200 * time.Millisecond
				if tt.mod != nil {
					tt.mod(c)
				}
			})
			got, err := a.Attest(context.Background(), creds)
			if tt.wantErr == "" {
				if err != nil || got != nil {
					t.Fatalf("Attest = %v, %v; want no selectors and no error", got, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Attest = %v, %v; want an error containing %q", got, err, tt.wantErr)
			}
		})
	}
}

// A kubelet with a self-signed certificate is reached when verification is explicitly skipped.
func TestAttestSkipKubeletVerification(t *testing.T) {
	k, _ := kubelet(t, func(int64) bool { return true })
	root, creds := procFixture(t, os.Getpid(), cgroupOf(fixturePod, fixtureContainer))
	a := newTestAttestor(t, k, root, func(c *Config) { c.KubeletCA = "/nonexistent"; c.SkipKubeletVerification = true })
	if _, err := a.Attest(context.Background(), creds); err != nil {
		t.Fatalf("Attest: %v", err)
	}
	if _, err := New(Config{KubeletCA: "/nonexistent"}); err == nil || !strings.Contains(err.Error(), "skip_kubelet_verification") {
		t.Errorf("New without a readable CA = %v, want an error naming the options", err)
	}
}

// selfSignedPEM writes a CA certificate that signed nothing the test kubelet serves.
func selfSignedPEM(t *testing.T) string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
