//go:build k8s

package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/node/k8spsat"
	"github.com/kithid/kith/internal/config"
	"github.com/kithid/kith/internal/kubernetes/kubetest"
	"github.com/kithid/kith/internal/server/attestors"
)

const (
	serverSA = "system:serviceaccount:kith:kith-server"
	agentSA  = "system:serviceaccount:kith:kith-agent"
)

// kubectl runs the kubectl built beside the API server (scripts/components/kube.sh) with the admin
// kubeconfig, from the repository root, and returns its output.
func kubectl(t *testing.T, kc *kubetest.Cluster, kubeconfig string, stdin []byte, args ...string) string {
	t.Helper()
	dir, err := kubetest.Assets()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "kubectl")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("kubectl is not in %s: run scripts/components/kube.sh once", dir)
	}
	cmd := exec.Command(bin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Dir = ".."
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// impersonating writes a kubeconfig of the admin's that acts as user (a service account, with its groups),
// so that what runs with it has exactly the RBAC the manifests grant that service account.
func impersonating(t *testing.T, kc *kubetest.Cluster, user string) string {
	t.Helper()
	cfg, err := clientcmd.Load(kc.KubeConfig)
	if err != nil {
		t.Fatal(err)
	}
	ns := strings.Split(user, ":")[2]
	for _, a := range cfg.AuthInfos {
		a.Impersonate = user
		a.ImpersonateGroups = []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
	}
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestK8sManifestsApply applies the kustomize base and overlays the way docs/kubernetes.md does
// (kubectl apply --server-side -k), so the API server validates every object and the RBAC; then runs the
// server's Kubernetes calls as its service account, with only the RBAC the manifests grant it.
func TestK8sManifestsApply(t *testing.T) {
	kc := kubetest.Start(t)
	admin := kc.KubeConfigFile(t)

	for _, dir := range []string{"deploy/kubernetes/overlays/dev", "deploy/kubernetes/overlays/production", "deploy/kubernetes/overlays/ha", "deploy/kubernetes/base", "deploy/kubernetes"} {
		t.Run("kubectl apply -k "+dir, func(t *testing.T) {
			// A StatefulSet's volumeClaimTemplates cannot change: each rendering installs afresh.
			kubectl(t, kc, admin, nil, "delete", "statefulset", "kith-server", "-n", "kith", "--ignore-not-found")
			out := kubectl(t, kc, admin, nil, "apply", "--server-side", "--force-conflicts", "-k", dir)
			for _, want := range []string{"namespace/kith serverside-applied", "statefulset.apps/kith-server serverside-applied", "daemonset.apps/kith-agent serverside-applied",
				"clusterrole.rbac.authorization.k8s.io/kith-server serverside-applied", "poddisruptionbudget.policy/kith-server serverside-applied",
				"customresourcedefinition.apiextensions.k8s.io/kithidentities.kith.io serverside-applied",
				"customresourcedefinition.apiextensions.k8s.io/kithgrants.kith.io serverside-applied"} {
				if !strings.Contains(out, want) {
					t.Errorf("kubectl apply printed\n%s\nwithout %q", out, want)
				}
			}
		})
	}
	t.Run("the bundle ConfigMap is made as docs/kubernetes.md shows", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "bundle.pem"), kc.Config.CAData, 0o600); err != nil { // any PEM roots
			t.Fatal(err)
		}
		out := kubectl(t, kc, admin, nil, "-n", "kith", "create", "configmap", "kith-bundle", "--from-file="+filepath.Join(dir, "bundle.pem"))
		if !strings.Contains(out, "configmap/kith-bundle created") {
			t.Errorf("kubectl create configmap printed %q", out)
		}
	})

	t.Run("the example applies: two services, a KithIdentity and a KithGrant", func(t *testing.T) {
		kubectl(t, kc, admin, nil, "wait", "--for", "condition=established", "--timeout", "30s", "crd/kithidentities.kith.io", "crd/kithgrants.kith.io")
		out := kubectl(t, kc, admin, nil, "apply", "--server-side", "-k", "deploy/kubernetes/examples/two-services")
		for _, want := range []string{"kithidentity.kith.io/by-service-account serverside-applied", "kithgrant.kith.io/frontend-to-backend serverside-applied",
			"deployment.apps/frontend serverside-applied", "deployment.apps/backend serverside-applied"} {
			if !strings.Contains(out, want) {
				t.Errorf("kubectl apply printed\n%s\nwithout %q", out, want)
			}
		}
		out = kubectl(t, kc, admin, nil, "get", "kithgrants", "-n", "shop")
		if !strings.Contains(out, "frontend-to-backend") {
			t.Errorf("kubectl get kithgrants -n shop printed\n%s", out)
		}
	})

	// What the docs show after installing: the objects exist (no kubelet runs them here).
	ctx := context.Background()
	ds, err := kc.Client.AppsV1().DaemonSets("kith").Get(ctx, "kith-agent", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !ds.Spec.Template.Spec.HostPID {
		t.Error("the agent's DaemonSet does not set hostPID")
	}
	if got := ds.Spec.Template.Spec.Containers[0].Image; got != "ghcr.io/kithid/kith:v0.1.0" {
		t.Errorf("agent image %s after applying deploy/kubernetes, want the production overlay's", got)
	}

	t.Run("the server's service account can attest an agent with k8s_psat", func(t *testing.T) {
		node1 := kc.Node(t, "node-1", map[string]string{"topology.kubernetes.io/zone": "zone-a"})
		// An agent pod as the DaemonSet makes it: service account kith-agent, bound to node-1.
		agentPod := kc.Pod(t, kubetest.PodSpec{Namespace: "kith", Name: "kith-agent-abcde", ServiceAccount: "kith-agent", Node: "node-1",
			Labels: map[string]string{"app.kubernetes.io/name": "kith-agent"}})
		td := spiffeid.RequireTrustDomainFromString("example.org")
		psat, err := attestors.K8sPSAT(td, []config.K8sCluster{{
			Name: "production", Kubeconfig: impersonating(t, kc, serverSA), Audience: "kith", ServiceAccounts: []string{"kith:kith-agent"},
		}})
		if err != nil {
			t.Fatal(err)
		}
		payload, _ := json.Marshal(k8spsat.Payload{Cluster: "production", Token: kc.Token(t, "kith", "kith-agent", kubetest.TokenOptions{Pod: agentPod})})
		res, err := psat.Attest(ctx, payload, nil)
		if err != nil {
			t.Fatalf("Attest as %s: %v", serverSA, err)
		}
		if want := spiffeid.RequireFromPath(td, "/kith/agent/k8s_psat/production/"+string(node1.UID)); res.AgentID != want {
			t.Errorf("agent id %s, want %s", res.AgentID, want)
		}
		if !strings.Contains(strings.Join(attestation.Strings(res.Selectors), " "), "k8s_psat:agent_node_name:node-1") {
			t.Errorf("selectors %v lack the node's name", res.Selectors)
		}
	})

	t.Run("the server's service account can watch what KithIdentity and KithGrant need", func(t *testing.T) {
		rc, err := clientcmd.BuildConfigFromFlags("", impersonating(t, kc, serverSA))
		if err != nil {
			t.Fatal(err)
		}
		c := kubernetes.NewForConfigOrDie(rc)
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := c.CoreV1().Pods("").List(wctx, metav1.ListOptions{Limit: 1}); err != nil {
			t.Errorf("list pods: %v", err)
		}
		w, err := c.CoreV1().Namespaces().Watch(wctx, metav1.ListOptions{})
		if err != nil {
			t.Errorf("watch namespaces: %v", err)
		} else {
			w.Stop()
		}
	})

	forbidden := []struct {
		name string
		user string
		attr authorizationv1.ResourceAttributes
	}{
		{"the server cannot read secrets", serverSA, authorizationv1.ResourceAttributes{Verb: "get", Resource: "secrets", Namespace: "kith"}},
		{"the server cannot create pods", serverSA, authorizationv1.ResourceAttributes{Verb: "create", Resource: "pods", Namespace: "default"}},
		{"the server cannot create KithGrants", serverSA, authorizationv1.ResourceAttributes{Verb: "create", Group: "kith.io", Resource: "kithgrants", Namespace: "default"}},
		{"the server cannot use the kubelet's proxy", serverSA, authorizationv1.ResourceAttributes{Verb: "get", Resource: "nodes", Subresource: "proxy"}},
		{"the agent cannot use the kubelet's proxy (exec, logs)", agentSA, authorizationv1.ResourceAttributes{Verb: "get", Resource: "nodes", Subresource: "proxy"}},
		{"the agent cannot list pods from the API server", agentSA, authorizationv1.ResourceAttributes{Verb: "list", Resource: "pods"}},
		{"the agent cannot review tokens", agentSA, authorizationv1.ResourceAttributes{Verb: "create", Group: "authentication.k8s.io", Resource: "tokenreviews"}},
		{"the server cannot change TrafficTargets", serverSA, authorizationv1.ResourceAttributes{Verb: "update", Group: "access.smi-spec.io", Resource: "traffictargets", Namespace: "shop"}},
		{"the server cannot delete AuthorizationPolicies", serverSA, authorizationv1.ResourceAttributes{Verb: "delete", Group: "security.istio.io", Resource: "authorizationpolicies", Namespace: "shop"}},
		{"the server cannot delete events", serverSA, authorizationv1.ResourceAttributes{Verb: "delete", Resource: "events", Namespace: "shop"}},
	}
	allowed := []struct {
		name string
		user string
		attr authorizationv1.ResourceAttributes
	}{
		{"the server reviews tokens", serverSA, authorizationv1.ResourceAttributes{Verb: "create", Group: "authentication.k8s.io", Resource: "tokenreviews"}},
		{"the server gets nodes", serverSA, authorizationv1.ResourceAttributes{Verb: "get", Resource: "nodes"}},
		{"the server watches KithIdentities", serverSA, authorizationv1.ResourceAttributes{Verb: "watch", Group: "kith.io", Resource: "kithidentities"}},
		{"the server updates KithGrants' status", serverSA, authorizationv1.ResourceAttributes{Verb: "update", Group: "kith.io", Resource: "kithgrants", Subresource: "status", Namespace: "shop"}},
		{"the server watches TrafficTargets", serverSA, authorizationv1.ResourceAttributes{Verb: "watch", Group: "access.smi-spec.io", Resource: "traffictargets"}},
		{"the server lists HTTPRouteGroups", serverSA, authorizationv1.ResourceAttributes{Verb: "list", Group: "specs.smi-spec.io", Resource: "httproutegroups"}},
		{"the server watches AuthorizationPolicies", serverSA, authorizationv1.ResourceAttributes{Verb: "watch", Group: "security.istio.io", Resource: "authorizationpolicies"}},
		{"the server posts an Event on a refused policy", serverSA, authorizationv1.ResourceAttributes{Verb: "create", Resource: "events", Namespace: "shop"}},
		{"the agent reads its kubelet's /pods (fine-grained kubelet authorization)", agentSA, authorizationv1.ResourceAttributes{Verb: "get", Resource: "nodes", Subresource: "pods", Name: "node-1"}},
	}
	sar := func(t *testing.T, user string, attr authorizationv1.ResourceAttributes) bool {
		t.Helper()
		ns := strings.Split(user, ":")[2]
		got, err := kc.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}, ResourceAttributes: &attr,
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return got.Status.Allowed
	}
	for _, tt := range allowed {
		t.Run(tt.name, func(t *testing.T) {
			if !sar(t, tt.user, tt.attr) {
				t.Errorf("%s may not %+v", tt.user, tt.attr)
			}
		})
	}
	for _, tt := range forbidden {
		t.Run(tt.name, func(t *testing.T) {
			if sar(t, tt.user, tt.attr) {
				t.Errorf("%s may %+v", tt.user, tt.attr)
			}
		})
	}
	t.Run("a forbidden call made as the server is refused by the API server", func(t *testing.T) {
		rc, err := clientcmd.BuildConfigFromFlags("", impersonating(t, kc, serverSA))
		if err != nil {
			t.Fatal(err)
		}
		_, err = kubernetes.NewForConfigOrDie(rc).CoreV1().Secrets("kith").List(ctx, metav1.ListOptions{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("list secrets as %s = %v, want forbidden", serverSA, err)
		}
	})

	t.Run("components/kubelet-nodes-proxy lets the agent use the kubelet proxy (clusters before 1.33)", func(t *testing.T) {
		dir, err := os.MkdirTemp("kubernetes", "overlay-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		overlay := "resources: [../base]\ncomponents: [../components/kubelet-nodes-proxy]\n"
		if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(overlay), 0o600); err != nil {
			t.Fatal(err)
		}
		kubectl(t, kc, admin, nil, "delete", "statefulset", "kith-server", "-n", "kith", "--ignore-not-found")
		kubectl(t, kc, admin, nil, "apply", "--server-side", "--force-conflicts", "-k", filepath.Join("deploy", dir))
		attr := authorizationv1.ResourceAttributes{Verb: "get", Resource: "nodes", Subresource: "proxy", Name: "node-1"}
		deadline := time.Now().Add(10 * time.Second)
		for !sar(t, agentSA, attr) {
			if time.Now().After(deadline) {
				t.Fatalf("%s may still not get nodes/proxy", agentSA)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}
