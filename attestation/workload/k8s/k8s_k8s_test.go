//go:build k8s && linux

package k8s

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/workload"
	"github.com/kithid/kith/attestation/workload/k8s/kubelettest"
	_ "github.com/kithid/kith/attestation/workload/unix" // merged with k8s, as the agent runs them
	"github.com/kithid/kith/internal/kubernetes/kubetest"
)

// realKubelet is a test kubelet for node over a real API server: it authenticates bearer tokens with
// TokenReview and authorizes them with a SubjectAccessReview for get nodes/proxy, as a kubelet does, and
// lists the API server's pods bound to node.
func realKubelet(t *testing.T, kc *kubetest.Cluster, node string) *kubelettest.Server {
	return kubelettest.Start(t, kubelettest.Config{
		Authenticate: func(ctx context.Context, tok string) error {
			tr, err := kc.Client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: tok}}, metav1.CreateOptions{})
			if err != nil {
				return err
			}
			if !tr.Status.Authenticated {
				return errors.New("Unauthorized: " + tr.Status.Error)
			}
			extra := map[string]authorizationv1.ExtraValue{}
			for k, v := range tr.Status.User.Extra {
				extra[k] = authorizationv1.ExtraValue(v)
			}
			sar, err := kc.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User: tr.Status.User.Username, Groups: tr.Status.User.Groups, UID: tr.Status.User.UID, Extra: extra,
				ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "get", Resource: "nodes", Subresource: "proxy", Name: node},
			}}, metav1.CreateOptions{})
			if err != nil {
				return err
			}
			if !sar.Status.Allowed {
				return fmt.Errorf("Forbidden (user=%s, verb=get, resource=nodes, subresource=proxy)", tr.Status.User.Username)
			}
			return nil
		},
		Pods: func(ctx context.Context) ([]corev1.Pod, error) {
			l, err := kc.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
			if err != nil {
				return nil, err
			}
			return l.Items, nil
		},
	})
}

func containerIDFor(n int) string { return fmt.Sprintf("%064x", n+0xc0ffee) }

// A real process, placed in a pod by its cgroup file, resolves through a kubelet serving the API
// server's pods to that pod's selectors, merged with its unix ones.
func TestK8sWorkloadAttestation(t *testing.T) {
	kc := kubetest.Start(t)
	kc.Node(t, "node-1", nil)
	kc.ServiceAccount(t, "kith", "kith-agent")
	kc.Grant(t, "system:serviceaccount:kith:kith-agent", kubetest.Rule{Group: "", Resources: []string{"nodes/proxy"}, Verbs: []string{"get"}})
	kubelet := realKubelet(t, kc, "node-1")
	// The agent's token, for the API server's own audience (as the kubelet reviews it).
	agentToken := tokenFile(t, kc.Token(t, "kith", "kith-agent", kubetest.TokenOptions{Audience: kc.Issuer()}))
	cfg := Config{KubeletURL: kubelet.URL, KubeletCA: kubelet.CAFile, TokenPath: agentToken, PollInterval: 50 * time.Millisecond, MaxWait: 5 * time.Second}

	containers := []corev1.Container{{Name: "web", Image: "registry.example/web:2"}, {Name: "envoy", Image: "envoyproxy/envoy:v1.34"}}
	web := kc.Pod(t, kubetest.PodSpec{Namespace: "shop", Name: "web-0", ServiceAccount: "web", Node: "node-1", Labels: map[string]string{"app": "web"}, Containers: containers})
	web = kc.SetContainerStatuses(t, web, []corev1.ContainerStatus{
		{Name: "web", Image: "registry.example/web:2", ContainerID: "containerd://" + containerIDFor(1)},
		{Name: "envoy", Image: "docker.io/envoyproxy/envoy:v1.34", ContainerID: "containerd://" + containerIDFor(2)},
	})

	t.Run("a process in the envoy container of a running pod", func(t *testing.T) {
		pid := child(t)
		root, creds := procFixture(t, pid, cgroupOf(string(web.UID), containerIDFor(2)))
		cfg := cfg
		cfg.ProcRoot = root
		a, err := workload.New([]string{"unix", Name}, workload.Options{Configs: map[string]any{Name: cfg}})
		if err != nil {
			t.Fatal(err)
		}
		got, err := a.Attest(context.Background(), creds)
		if err != nil {
			t.Fatalf("Attest: %v", err)
		}
		want := []string{
			"k8s:container-image:docker.io/envoyproxy/envoy:v1.34", "k8s:container-image:envoyproxy/envoy:v1.34", "k8s:container-name:envoy",
			"k8s:node-name:node-1", "k8s:ns:shop", "k8s:pod-image:envoyproxy/envoy:v1.34", "k8s:pod-image:registry.example/web:2",
			"k8s:pod-label:app:web", "k8s:pod-name:web-0", "k8s:pod-uid:" + string(web.UID), "k8s:sa:web",
			"unix:uid:" + strconv.Itoa(os.Getuid()),
		}
		gotS := attestation.Strings(got)
		for _, w := range want {
			if !slices.Contains(gotS, w) {
				t.Errorf("selectors %v lack %s", gotS, w)
			}
		}
	})

	t.Run("a container that started before its pod's status lists it", func(t *testing.T) {
		late := kc.Pod(t, kubetest.PodSpec{Namespace: "shop", Name: "late-0", ServiceAccount: "web", Node: "node-1"})
		pid := child(t)
		root, creds := procFixture(t, pid, cgroupOf(string(late.UID), containerIDFor(3)))
		cfg := cfg
		cfg.ProcRoot = root
		a, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		type result struct {
			sels []attestation.Selector
			err  error
		}
		done := make(chan result, 1)
		start := time.Now()
		go func() {
			s, err := a.Attest(context.Background(), creds)
			done <- result{s, err}
		}()
		time.Sleep(300 * time.Millisecond)
		kc.SetContainerStatuses(t, late, []corev1.ContainerStatus{{Name: "app", Image: "registry.example/app:1", ContainerID: "cri-o://" + containerIDFor(3)}})
		r := <-done
		if r.err != nil {
			t.Fatalf("Attest: %v", r.err)
		}
		if !slices.Contains(attestation.Strings(r.sels), "k8s:pod-name:late-0") {
			t.Errorf("selectors %v do not name the pod", r.sels)
		}
		t.Logf("attested in %s, waiting for the pod's status", time.Since(start).Round(time.Millisecond))
	})

	t.Run("an agent whose service account may not read the kubelet", func(t *testing.T) {
		kc.ServiceAccount(t, "kith", "nobody")
		pid := child(t)
		root, creds := procFixture(t, pid, cgroupOf(string(web.UID), containerIDFor(1)))
		cfg := cfg
		cfg.ProcRoot = root
		cfg.TokenPath = tokenFile(t, kc.Token(t, "kith", "nobody", kubetest.TokenOptions{Audience: kc.Issuer()}))
		a, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = a.Attest(context.Background(), creds)
		if err == nil || !strings.Contains(err.Error(), "401 Unauthorized to GET /pods: Forbidden") {
			t.Fatalf("Attest = %v, want the kubelet's refusal", err)
		}
	})
}
