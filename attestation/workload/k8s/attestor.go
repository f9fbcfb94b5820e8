// Package k8s is the Kubernetes workload attestor: it finds the pod and container a process runs in and
// gives the pod's selectors (k8s:ns, k8s:sa, k8s:pod-name, ...), alongside the unix attestor's.
//
// The pid's /proc/<pid>/cgroup names the pod UID and container ID (cgroup v1 or v2; containerd, CRI-O
// and Docker, cgroupfs or systemd driver: see [ParseCgroup]). The pod comes from the kubelet's /pods on
// its secure port, authenticated with the agent's service-account token, the kubelet's certificate
// verified against a CA (or, when configured, not verified). The kubelet's pod list is cached on the
// node and fetched again on a miss; a pod whose status does not yet list the container (it just
// started: the kubelet reports statuses a little after starting containers) is asked for again every
// poll interval, up to a bound, rather than failing at once.
package k8s

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/workload"
)

// Name is the name the attestor is registered under, for the agent's workload_attestors list.
const Name = "k8s"

// Defaults.
const (
	DefaultKubeletURL = "https://127.0.0.1:10250"
	DefaultTokenPath  = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	DefaultKubeletCA  = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
)

func init() {
	workload.Register(Name, func(o workload.Options) (workload.Attestor, error) {
		cfg, _ := o.Config.(Config)
		cfg.Logger = o.Logger
		return New(cfg)
	})
}

// Config configures an [Attestor]. Every field's zero value is usable.
type Config struct {
	// KubeletURL is the kubelet's secure port. Zero: DefaultKubeletURL (the agent runs with hostNetwork).
	KubeletURL string
	// TokenPath is the agent's service-account token, sent to the kubelet; read again on every fetch.
	// Zero: DefaultTokenPath.
	TokenPath string
	// KubeletCA is a PEM file of the CAs the kubelet's serving certificate is verified against. Zero:
	// DefaultKubeletCA.
	KubeletCA string
	// SkipKubeletVerification does not verify the kubelet's certificate (kubelets with self-signed
	// serving certificates); it is logged as a warning.
	SkipKubeletVerification bool
	// PollInterval is the wait between two fetches of the pod list while a process's pod or container
	// is not listed. Zero: 250 ms.
	PollInterval time.Duration
	// MaxWait bounds the time spent waiting for the pod and container to be listed. Zero: 10 s.
	MaxWait time.Duration
	// CacheTTL is how long a fetched pod list answers for the containers it lists (a pod's labels change
	// within it). Zero: 5 s.
	CacheTTL time.Duration
	ProcRoot string           // zero: "/proc"
	Logger   *slog.Logger     // zero: discard
	Now      func() time.Time // zero: time.Now
}

// Attestor derives k8s selectors. It is safe for concurrent use.
type Attestor struct {
	cfg    Config
	client *http.Client
	log    *slog.Logger

	mu        sync.Mutex
	cache     *podIndex
	fetchedAt time.Time
	fetching  chan struct{} // closed when the fetch in flight ends; nil when none
	fetchErr  error
	fetches   int // for tests
}

var _ workload.Attestor = (*Attestor)(nil)

// New returns an Attestor; it fails when the kubelet's CA cannot be read and verification is not skipped.
func New(cfg Config) (*Attestor, error) {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&cfg.KubeletURL, DefaultKubeletURL)
	def(&cfg.TokenPath, DefaultTokenPath)
	def(&cfg.KubeletCA, DefaultKubeletCA)
	def(&cfg.ProcRoot, "/proc")
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 250 * time.Millisecond
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 10 * time.Second
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.KubeletURL = strings.TrimSuffix(cfg.KubeletURL, "/")
	if !strings.HasPrefix(cfg.KubeletURL, "https://") {
		return nil, fmt.Errorf("k8s attestor: kubelet url %q is not https:// (the kubelet's secure port, e.g. %s)", cfg.KubeletURL, DefaultKubeletURL)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.SkipKubeletVerification {
		tc.InsecureSkipVerify = true
		cfg.Logger.Warn("the kubelet's certificate is not verified (k8s.skip_kubelet_verification): anyone who can intercept the agent's connection to the kubelet can tell it what pods run here")
	} else {
		pem, err := os.ReadFile(cfg.KubeletCA)
		if err != nil {
			return nil, fmt.Errorf("k8s attestor: read the kubelet's CA: %w (set k8s.kubelet_ca, or k8s.skip_kubelet_verification for a kubelet with a self-signed certificate)", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("k8s attestor: %s holds no PEM certificate", cfg.KubeletCA)
		}
		tc.RootCAs = pool
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true, MaxIdleConns: 2, IdleConnTimeout: time.Minute}}
	return &Attestor{cfg: cfg, client: client, log: cfg.Logger}, nil
}

// Attest returns the k8s selectors of the process, none for a process that is not in a pod. It waits
// (up to MaxWait) for the kubelet to list the process's pod and container, and fails when it does not.
func (a *Attestor) Attest(ctx context.Context, creds peerCredentials) ([]attestation.Selector, error) {
	c, err := a.container(creds)
	if errors.Is(err, ErrNotInPod) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	pod, status, err := a.lookup(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("k8s attestor: pid %d: %w", creds.PID, err)
	}
	return Selectors(pod, status), nil
}

// lookup finds the container in the cached pod list, fetching it again on a miss: at once when the list
// is older than the lookup (a pod that started since is not in it), then every PollInterval up to MaxWait
// (the kubelet has not listed the container yet).
func (a *Attestor) lookup(ctx context.Context, c Container) (*corev1.Pod, *corev1.ContainerStatus, error) {
	start := a.cfg.Now()
	deadline := start.Add(a.cfg.MaxWait)
	var since time.Time // the fetch must be newer than this
	for {
		idx, at, err := a.podList(ctx, since)
		if err != nil {
			return nil, nil, err
		}
		pod, st, why := idx.find(c)
		if pod != nil {
			return pod, st, nil
		}
		if !a.cfg.Now().Before(deadline) {
			return nil, nil, fmt.Errorf("%s after %s (is the agent on the node the pod runs on?)", why, a.cfg.MaxWait)
		}
		if at.Before(start) {
			// A cached list from before this workload connected: ask the kubelet now, not a poll later.
			since = at
			continue
		}
		a.log.DebugContext(ctx, "pod or container not listed by the kubelet yet; asking again", "pod_uid", c.PodUID, "container_id", c.ContainerID, "why", why)
		since = a.cfg.Now()
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(min(a.cfg.PollInterval, deadline.Sub(a.cfg.Now()))):
		}
	}
}

// podList returns the cached pod list when it is fresh and fetched after since, else fetches it (one
// fetch at a time: concurrent callers share it), with the time it was fetched.
func (a *Attestor) podList(ctx context.Context, since time.Time) (*podIndex, time.Time, error) {
	for {
		a.mu.Lock()
		now := a.cfg.Now()
		if a.cache != nil && a.fetchedAt.After(since) && now.Sub(a.fetchedAt) < a.cfg.CacheTTL {
			idx, at := a.cache, a.fetchedAt
			a.mu.Unlock()
			return idx, at, nil
		}
		if wait := a.fetching; wait != nil {
			a.mu.Unlock()
			select {
			case <-wait:
			case <-ctx.Done():
				return nil, time.Time{}, ctx.Err()
			}
			a.mu.Lock()
			err, idx, at := a.fetchErr, a.cache, a.fetchedAt
			a.mu.Unlock()
			if err != nil {
				return nil, time.Time{}, err
			}
			if idx != nil && at.After(since) {
				return idx, at, nil
			}
			continue
		}
		done := make(chan struct{})
		a.fetching = done
		a.fetches++
		a.mu.Unlock()

		idx, err := a.fetch(ctx)
		a.mu.Lock()
		a.fetching, a.fetchErr = nil, err
		// Stamp the list with a time strictly after since, even on a coarse clock.
		at := a.cfg.Now()
		if !at.After(since) {
			at = since.Add(time.Nanosecond)
		}
		if err == nil {
			a.cache, a.fetchedAt = idx, at
		}
		close(done)
		a.mu.Unlock()
		return idx, at, err
	}
}

// maxPodList bounds the kubelet's answer.
const maxPodList = 64 << 20

// fetch gets the kubelet's pod list.
func (a *Attestor) fetch(ctx context.Context) (*podIndex, error) {
	tok, err := os.ReadFile(a.cfg.TokenPath)
	if err != nil {
		return nil, fmt.Errorf("read the agent's service-account token: %w (set k8s.token_path)", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.cfg.KubeletURL+"/pods", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	req.Header.Set("Accept", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ask the kubelet for its pods: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("the kubelet answered %s to GET /pods: %s (the agent's service account needs get on nodes/proxy)", resp.Status, strings.TrimSpace(string(body)))
	}
	var list corev1.PodList
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxPodList)).Decode(&list); err != nil {
		return nil, fmt.Errorf("read the kubelet's pod list: %w", err)
	}
	return newPodIndex(list.Items), nil
}

// podIndex is a pod list indexed by pod UID and container ID.
type podIndex struct {
	pods       map[string]*corev1.Pod
	containers map[string]containerRef
}

type containerRef struct {
	pod    *corev1.Pod
	status *corev1.ContainerStatus
}

func newPodIndex(pods []corev1.Pod) *podIndex {
	idx := &podIndex{pods: make(map[string]*corev1.Pod, len(pods)), containers: map[string]containerRef{}}
	for i := range pods {
		p := &pods[i]
		idx.pods[string(p.UID)] = p
		if hash := p.Annotations["kubernetes.io/config.hash"]; hash != "" { // a static pod's cgroup uses its hash
			idx.pods[hash] = p
		}
		for _, sts := range [][]corev1.ContainerStatus{p.Status.ContainerStatuses, p.Status.InitContainerStatuses, p.Status.EphemeralContainerStatuses} {
			for j := range sts {
				if id := runtimeID(sts[j].ContainerID); id != "" {
					idx.containers[id] = containerRef{pod: p, status: &sts[j]}
				}
			}
		}
	}
	return idx
}

// runtimeID strips the runtime's scheme from a status's container ID ("containerd://<id>").
func runtimeID(s string) string {
	if _, id, ok := strings.Cut(s, "://"); ok {
		return id
	}
	return s
}

// find returns the container's pod and status, or why it is not there.
func (idx *podIndex) find(c Container) (*corev1.Pod, *corev1.ContainerStatus, string) {
	pod, ok := idx.pods[c.PodUID]
	if !ok {
		return nil, nil, fmt.Sprintf("the kubelet lists no pod %s", c.PodUID)
	}
	ref, ok := idx.containers[c.ContainerID]
	if !ok || ref.pod != pod {
		return nil, nil, fmt.Sprintf("pod %s/%s does not list container %s in its status", pod.Namespace, pod.Name, c.ContainerID)
	}
	return pod, ref.status, ""
}

// Selectors are the k8s selectors of a container (status) of pod: k8s:ns, :sa, :pod-name, :pod-uid,
// :node-name, :pod-label:<key>:<value> per label, :pod-image per image of the pod's containers,
// :container-name, and :container-image for both the image the spec names and the one the runtime
// reports. Values that are not valid selectors (empty, too long) are left out.
func Selectors(pod *corev1.Pod, status *corev1.ContainerStatus) []attestation.Selector {
	var sels []attestation.Selector
	add := func(key, value string) {
		s := attestation.Selector{Type: attestation.TypeK8s, Key: key, Value: value}
		if s.Validate() == nil {
			sels = append(sels, s)
		}
	}
	add("ns", pod.Namespace)
	add("sa", pod.Spec.ServiceAccountName)
	add("pod-name", pod.Name)
	add("pod-uid", string(pod.UID))
	add("node-name", pod.Spec.NodeName)
	for k, v := range pod.Labels {
		add("pod-label", k+":"+v)
	}
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			add("pod-image", c.Image)
			if c.Name == status.Name {
				add("container-image", c.Image)
			}
		}
	}
	for _, e := range pod.Spec.EphemeralContainers {
		if e.Name == status.Name {
			add("container-image", e.Image)
		}
	}
	add("container-name", status.Name)
	add("container-image", status.Image)
	return attestation.Normalize(sels)
}
