// Package kubetest starts a real kube-apiserver with etcd on loopback for the tests that need Kubernetes
// (controller-runtime's envtest), and makes the objects those tests attest against: nodes, pods, service
// accounts, and bound service-account tokens from the TokenRequest API.
//
// The binaries come from scripts/components/kube.sh, which builds them once from the Go module proxy into
// a cache outside the repository. The tests that use this package carry the build tag k8s and run in
// `make test` (target test-k8s, which runs the script first). Without the binaries, [Start] fails the test
// and says how to get them: a Kubernetes test is never skipped silently.
package kubetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// The versions scripts/components/kube.sh builds; TestVersionsMatchScript keeps them in step.
const (
	KubeVersion = "v1.37.2"
	EtcdVersion = "v3.6.16"
)

// Assets returns the directory holding kube-apiserver and etcd: $KUBEBUILDER_ASSETS when set, else the
// cache scripts/components/kube.sh fills ($KITH_TEST_CACHE, default $HOME/.cache/kith-test). It fails when
// either binary is missing there, saying how to build them.
func Assets() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		cache := os.Getenv("KITH_TEST_CACHE")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("find the test cache: %w (set KITH_TEST_CACHE or KUBEBUILDER_ASSETS)", err)
			}
			cache = filepath.Join(home, ".cache", "kith-test")
		}
		dir = filepath.Join(cache, "kube-"+KubeVersion+"-etcd-"+EtcdVersion)
	}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		fi, err := os.Stat(filepath.Join(dir, bin))
		if err != nil || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("%s is not in %s: run scripts/components/kube.sh once (it builds kube-apiserver %s and etcd %s "+
				"from the Go module proxy into that cache; tens of minutes cold), or point KUBEBUILDER_ASSETS at a directory holding both",
				bin, dir, KubeVersion, EtcdVersion)
		}
	}
	return dir, nil
}

// Cluster is a running API server and an admin client of it.
type Cluster struct {
	Env *envtest.Environment
	// Config is the admin's (system:masters) REST config.
	Config *rest.Config
	// Client is an admin client.
	Client kubernetes.Interface
	// KubeConfig is a kubeconfig for the admin.
	KubeConfig []byte
}

// Start starts kube-apiserver and etcd (about 6 s) and stops them when tb ends. It fails tb, with what
// to do, when the binaries are missing.
func Start(tb testing.TB) *Cluster {
	tb.Helper()
	dir, err := Assets()
	if err != nil {
		tb.Fatal(err)
	}
	env := &envtest.Environment{BinaryAssetsDirectory: dir, ControlPlaneStartTimeout: 2 * time.Minute}
	cfg, err := env.Start()
	if err != nil {
		tb.Fatalf("start kube-apiserver and etcd from %s: %v", dir, err)
	}
	tb.Cleanup(func() {
		if err := env.Stop(); err != nil {
			tb.Errorf("stop kube-apiserver and etcd: %v", err)
		}
	})
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return &Cluster{Env: env, Config: cfg, Client: client, KubeConfig: env.KubeConfig}
}

// KubeConfigFile writes the admin kubeconfig into a temporary file and returns its path.
func (c *Cluster) KubeConfigFile(tb testing.TB) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "kubeconfig")
	if err := os.WriteFile(p, c.KubeConfig, 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

// User returns a REST config that authenticates as the user name in groups (a client certificate), for
// running code with only the RBAC that user is granted.
func (c *Cluster) User(tb testing.TB, name string, groups ...string) *rest.Config {
	tb.Helper()
	u, err := c.Env.AddUser(envtestUser(name, groups), nil)
	if err != nil {
		tb.Fatalf("add user %s: %v", name, err)
	}
	return u.Config()
}

func envtestUser(name string, groups []string) envtest.User {
	return envtest.User{Name: name, Groups: groups}
}

// ServiceAccountSigningKeyFile is the PEM private key the API server signs service-account tokens with,
// for tests that must forge one (an expired token cannot be requested).
func (c *Cluster) ServiceAccountSigningKeyFile() string {
	return filepath.Join(c.Env.ControlPlane.APIServer.CertDir, "sa-signer.key")
}

// Issuer is the API server's service-account token issuer (the iss of its tokens).
func (c *Cluster) Issuer() string {
	return c.Env.ControlPlane.APIServer.SecureServing.URL("https", "/").String()
}

func ctx(tb testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return c
}

// Namespace creates a namespace with labels (it may already exist: then only its labels are set).
func (c *Cluster) Namespace(tb testing.TB, name string, labels map[string]string) *corev1.Namespace {
	tb.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	got, err := c.Client.CoreV1().Namespaces().Create(ctx(tb), ns, metav1.CreateOptions{})
	if isAlreadyExists(err) {
		got, err = c.Client.CoreV1().Namespaces().Get(ctx(tb), name, metav1.GetOptions{})
		if err == nil {
			got.Labels = labels
			got, err = c.Client.CoreV1().Namespaces().Update(ctx(tb), got, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		tb.Fatalf("namespace %s: %v", name, err)
	}
	return got
}

// Node creates a node (the API server assigns its UID).
func (c *Cluster) Node(tb testing.TB, name string, labels map[string]string) *corev1.Node {
	tb.Helper()
	n, err := c.Client.CoreV1().Nodes().Create(ctx(tb), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		tb.Fatalf("create node %s: %v", name, err)
	}
	return n
}

// ServiceAccount creates a service account in ns (creating ns when missing).
func (c *Cluster) ServiceAccount(tb testing.TB, ns, name string) *corev1.ServiceAccount {
	tb.Helper()
	if _, err := c.Client.CoreV1().Namespaces().Get(ctx(tb), ns, metav1.GetOptions{}); err != nil {
		c.Namespace(tb, ns, nil)
	}
	sa, err := c.Client.CoreV1().ServiceAccounts(ns).Create(ctx(tb), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if isAlreadyExists(err) {
		sa, err = c.Client.CoreV1().ServiceAccounts(ns).Get(ctx(tb), name, metav1.GetOptions{})
	}
	if err != nil {
		tb.Fatalf("service account %s/%s: %v", ns, name, err)
	}
	return sa
}

// PodSpec describes a pod to create.
type PodSpec struct {
	Namespace, Name string
	ServiceAccount  string // created when missing
	Node            string // spec.nodeName: the pod is bound to it (there is no scheduler)
	Labels          map[string]string
	// Containers by name and image; default one container "app" with image "registry.example/app:1".
	Containers []corev1.Container
}

// Pod creates a pod. It stays Pending: nothing runs it.
func (c *Cluster) Pod(tb testing.TB, s PodSpec) *corev1.Pod {
	tb.Helper()
	if s.ServiceAccount == "" {
		s.ServiceAccount = "default"
	}
	c.ServiceAccount(tb, s.Namespace, s.ServiceAccount)
	if len(s.Containers) == 0 {
		s.Containers = []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, Labels: s.Labels},
		Spec:       corev1.PodSpec{ServiceAccountName: s.ServiceAccount, NodeName: s.Node, Containers: s.Containers},
	}
	got, err := c.Client.CoreV1().Pods(s.Namespace).Create(ctx(tb), p, metav1.CreateOptions{})
	if err != nil {
		tb.Fatalf("create pod %s/%s: %v", s.Namespace, s.Name, err)
	}
	return got
}

// DeletePod deletes a pod at once (no grace period).
func (c *Cluster) DeletePod(tb testing.TB, p *corev1.Pod) {
	tb.Helper()
	zero := int64(0)
	if err := c.Client.CoreV1().Pods(p.Namespace).Delete(ctx(tb), p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		tb.Fatalf("delete pod %s/%s: %v", p.Namespace, p.Name, err)
	}
}

// SetContainerStatuses sets the pod's status to Running with the given container statuses, through the
// status subresource as a kubelet would, and returns the updated pod.
func (c *Cluster) SetContainerStatuses(tb testing.TB, p *corev1.Pod, statuses []corev1.ContainerStatus) *corev1.Pod {
	tb.Helper()
	cur, err := c.Client.CoreV1().Pods(p.Namespace).Get(ctx(tb), p.Name, metav1.GetOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	cur.Status.Phase = corev1.PodRunning
	cur.Status.ContainerStatuses = statuses
	got, err := c.Client.CoreV1().Pods(cur.Namespace).UpdateStatus(ctx(tb), cur, metav1.UpdateOptions{})
	if err != nil {
		tb.Fatalf("update status of pod %s/%s: %v", p.Namespace, p.Name, err)
	}
	return got
}

// TokenOptions describe a service-account token to request.
type TokenOptions struct {
	Audience string        // default "kith"
	TTL      time.Duration // default 1h; the API server's minimum is 10 minutes
	Pod      *corev1.Pod   // bind the token to this pod; nil: unbound
}

// Token requests a service-account token for ns/sa with the TokenRequest API, as the kubelet does for a
// projected volume.
func (c *Cluster) Token(tb testing.TB, ns, sa string, o TokenOptions) string {
	tb.Helper()
	if o.Audience == "" {
		o.Audience = "kith"
	}
	if o.TTL == 0 {
		o.TTL = time.Hour
	}
	secs := int64(o.TTL / time.Second)
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{o.Audience}, ExpirationSeconds: &secs}}
	if o.Pod != nil {
		req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: o.Pod.Name, UID: types.UID(o.Pod.UID)}
	}
	got, err := c.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx(tb), sa, req, metav1.CreateOptions{})
	if err != nil {
		tb.Fatalf("request a token for %s/%s: %v", ns, sa, err)
	}
	return got.Status.Token
}

func isAlreadyExists(err error) bool {
	var s interface{ Status() metav1.Status }
	return errors.As(err, &s) && s.Status().Reason == metav1.StatusReasonAlreadyExists
}

// Rule is one RBAC rule: verbs on resources of an API group ("" for core).
type Rule struct {
	Group     string
	Resources []string
	Verbs     []string
}

// Grant gives user the rules cluster-wide (a ClusterRole and its binding named after the user) and
// waits until the API server's authorizer applies them.
func (c *Cluster) Grant(tb testing.TB, user string, rules ...Rule) {
	tb.Helper()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: user}}
	for _, r := range rules {
		role.Rules = append(role.Rules, rbacv1.PolicyRule{APIGroups: []string{r.Group}, Resources: r.Resources, Verbs: r.Verbs})
	}
	if _, err := c.Client.RbacV1().ClusterRoles().Create(ctx(tb), role, metav1.CreateOptions{}); err != nil {
		tb.Fatalf("cluster role %s: %v", user, err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: user},
		Subjects:   []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: user}},
	}
	if _, err := c.Client.RbacV1().ClusterRoleBindings().Create(ctx(tb), binding, metav1.CreateOptions{}); err != nil {
		tb.Fatalf("cluster role binding %s: %v", user, err)
	}
	// The authorizer reads RBAC from an informer: wait until it allows the last rule.
	last := rules[len(rules)-1]
	deadline := time.Now().Add(10 * time.Second)
	for {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:               user,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Group: last.Group, Resource: last.Resources[0], Verb: last.Verbs[0]},
		}}
		got, err := c.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx(tb), sar, metav1.CreateOptions{})
		if err != nil {
			tb.Fatal(err)
		}
		if got.Status.Allowed {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("user %s is still not allowed to %s %s after 10s", user, last.Verbs[0], last.Resources[0])
		}
		time.Sleep(50 * time.Millisecond)
	}
}
