//go:build k8s

package identity_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/internal/kubernetes/apis/v1alpha1"
	"github.com/kithid/kith/internal/kubernetes/identity"
	"github.com/kithid/kith/internal/kubernetes/kubetest"
	"github.com/kithid/kith/internal/store"
	"github.com/kithid/kith/internal/store/sqlite"
)

var td = spiffeid.RequireTrustDomainFromString("kith.test")

type env struct {
	c     *kubetest.Cluster
	dyn   dynamic.Interface
	st    *sqlite.Store
	nodes map[string]string // node name → UID
}

func setup(t *testing.T) *env {
	t.Helper()
	c := kubetest.Start(t)
	if _, err := envtest.InstallCRDs(c.Config, envtest.CRDInstallOptions{
		Paths: []string{filepath.Join("..", "..", "..", "deploy", "kubernetes", "base", "crds")}, ErrorIfPathMissing: true}); err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "kith.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{c: c, dyn: dynamic.NewForConfigOrDie(c.Config), st: st, nodes: map[string]string{}}
	for _, n := range []string{"node-a", "node-b"} {
		e.nodes[n] = string(c.Node(t, n, nil).UID)
	}
	return e
}

// start runs a controller until the returned stop is called (or the test ends).
func (e *env) start(t *testing.T) (stop func()) {
	t.Helper()
	ctrl, err := identity.New(identity.Config{TrustDomain: td, Cluster: "test", Dynamic: e.dyn, Store: e.st,
		StatusDelay: 50 * time.Millisecond, Resync: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctrl.Run(ctx) }()
	var once bool
	stop = func() {
		if once {
			return
		}
		once = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func (e *env) apply(t *testing.T, gvr string, obj map[string]any) {
	t.Helper()
	u := map[string]any{"apiVersion": "kith.io/v1alpha1"}
	for k, v := range obj {
		u[k] = v
	}
	body := mustJSON(t, u)
	res := v1alpha1.KithIdentities
	if gvr == "KithGrant" {
		res = v1alpha1.KithGrants
	}
	md := obj["metadata"].(map[string]any)
	ns, _ := md["namespace"].(string)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := e.dyn.Resource(res).Namespace(ns).Patch(context.Background(), md["name"].(string), types.ApplyPatchType, body,
			metav1.PatchOptions{FieldManager: "kith-test", Force: ptr(true)})
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "could not find the requested resource") || time.Now().After(deadline) {
			t.Fatalf("apply %s: %v", md["name"], err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func ptr[T any](v T) *T { return &v }

// got is the k8s entries as "spiffe id <- parent [pod uid]", sorted.
func (e *env) got(t *testing.T) []string {
	t.Helper()
	es, err := e.st.ListEntries(context.Background(), store.EntryFilter{SourcePrefix: "k8s:"})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, en := range es {
		var uid string
		for _, s := range en.Selectors {
			if s.Key == "pod-uid" {
				uid = s.Value
			}
		}
		out = append(out, en.SPIFFEID.String()+" <- "+en.ParentID.String()+" "+uid)
	}
	sort.Strings(out)
	return out
}

func (e *env) waitFor(t *testing.T, what string, want []string) {
	t.Helper()
	sort.Strings(want)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := e.got(t)
		diff := cmp.Diff(want, got)
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: entries (-want +got):\n%s", what, diff)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) agent(node string) string {
	return "spiffe://kith.test/kith/agent/k8s_psat/test/" + e.nodes[node]
}

// TestK8sIdentitiesFollowPods: a KithIdentity gives 100 pods in 3 namespaces one entry each on the agent
// of their node; a namespace relabelled out of the selector loses its entries; deleted pods lose theirs;
// a controller restarted mid-way (pods changing while it is down) converges with no duplicate; status
// reports pods matched and entries.
func TestK8sIdentitiesFollowPods(t *testing.T) {
	e := setup(t)
	stop := e.start(t)
	for _, ns := range []string{"shop", "bank", "blog"} {
		e.c.Namespace(t, ns, map[string]string{"kith.io/enabled": "true"})
	}
	e.apply(t, "KithIdentity", map[string]any{"kind": "KithIdentity", "metadata": map[string]any{"name": "all"},
		"spec": map[string]any{
			"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kith.io/enabled": "true"}},
			"podSelector":       map[string]any{"matchExpressions": []any{map[string]any{"key": "kith.io/skip", "operator": "DoesNotExist"}}},
			"dnsNameTemplates":  []any{"{{.PodName}}.{{.Namespace}}.svc"},
			"labels":            map[string]any{"ns": "{{.Namespace}}", "team": "core"},
			"ttl":               "30m",
		}})
	type podRef struct{ ns, name, node, uid, sa string }
	var pods []podRef
	want := func(skip func(podRef) bool) []string {
		var out []string
		for _, p := range pods {
			if skip != nil && skip(p) {
				continue
			}
			out = append(out, fmt.Sprintf("spiffe://kith.test/ns/%s/sa/%s <- %s %s", p.ns, p.sa, e.agent(p.node), p.uid))
		}
		return out
	}
	start := time.Now()
	nss := []string{"shop", "bank", "blog"}
	for i := range 100 {
		p := podRef{ns: nss[i%3], name: fmt.Sprintf("app-%d", i), node: []string{"node-a", "node-b"}[i%2], sa: fmt.Sprintf("sa%d", i%5)}
		pod := e.c.Pod(t, kubetest.PodSpec{Namespace: p.ns, Name: p.name, ServiceAccount: p.sa, Node: p.node})
		p.uid = string(pod.UID)
		pods = append(pods, p)
	}
	// A pod the selector leaves out, and one on no node yet: neither gets an entry.
	e.c.Pod(t, kubetest.PodSpec{Namespace: "shop", Name: "skipped", Node: "node-a", Labels: map[string]string{"kith.io/skip": "yes"}})
	e.c.Pod(t, kubetest.PodSpec{Namespace: "shop", Name: "unscheduled"})
	e.waitFor(t, "100 pods", want(nil))
	t.Logf("100 pods created and their entries kept in %v", time.Since(start).Round(time.Millisecond))

	es, err := e.st.ListEntries(context.Background(), store.EntryFilter{SourcePrefix: identity.Source("all", "shop", "app-0")})
	if err != nil || len(es) != 1 {
		t.Fatalf("entry of shop/app-0: %v, %v", es, err)
	}
	wantEntry := store.Entry{DNSNames: []string{"app-0.shop.svc"}, Labels: map[string]string{"ns": "shop", "team": "core"}, X509TTL: 30 * time.Minute,
		Selectors: []attestation.Selector{{Type: "k8s", Key: "ns", Value: "shop"}, {Type: "k8s", Key: "pod-uid", Value: pods[0].uid}, {Type: "k8s", Key: "sa", Value: "sa0"}}}
	gotEntry := store.Entry{DNSNames: es[0].DNSNames, Labels: es[0].Labels, X509TTL: es[0].X509TTL, Selectors: attestation.Normalize(es[0].Selectors)}
	if diff := cmp.Diff(wantEntry, gotEntry, cmp.Comparer(func(a, b spiffeid.ID) bool { return a == b })); diff != "" {
		t.Errorf("entry of shop/app-0 (-want +got):\n%s", diff)
	}
	waitStatus(t, e, "all", 100, 100)

	// Relabel a namespace out of the selector.
	e.c.Namespace(t, "blog", map[string]string{"kith.io/enabled": "false"})
	noBlog := want(func(p podRef) bool { return p.ns == "blog" })
	e.waitFor(t, "blog relabelled out", noBlog)
	waitStatus(t, e, "all", len(noBlog), len(noBlog))

	// Delete ten pods of shop.
	deleted := map[string]bool{}
	for _, p := range pods[:30] {
		if p.ns == "shop" {
			e.c.DeletePod(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: p.ns, Name: p.name}})
			deleted[p.name] = true
		}
	}
	gone := func(p podRef) bool { return p.ns == "blog" || deleted[p.name] }
	e.waitFor(t, "pods deleted", want(gone))

	// Restart mid-way: while the controller is down, pods are deleted and created and blog comes back.
	stop()
	for _, p := range pods[30:45] {
		if p.ns == "bank" {
			e.c.DeletePod(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: p.ns, Name: p.name}})
			deleted[p.name] = true
		}
	}
	for i := 100; i < 110; i++ {
		p := podRef{ns: "bank", name: fmt.Sprintf("app-%d", i), node: "node-b", sa: "late"}
		p.uid = string(e.c.Pod(t, kubetest.PodSpec{Namespace: p.ns, Name: p.name, ServiceAccount: p.sa, Node: p.node}).UID)
		pods = append(pods, p)
	}
	e.c.Namespace(t, "blog", map[string]string{"kith.io/enabled": "true"})
	e.start(t)
	final := want(func(p podRef) bool { return deleted[p.name] })
	e.waitFor(t, "after the restart", final)
	// And once more with nothing changed: the same entries, none duplicated, none rewritten.
	before, _ := e.st.Revision(context.Background())
	time.Sleep(500 * time.Millisecond)
	e.waitFor(t, "settled", final)
	if after, _ := e.st.Revision(context.Background()); after != before {
		t.Errorf("store revision moved from %d to %d with nothing changing in the cluster", before, after)
	}
	waitStatus(t, e, "all", len(final), len(final))

	// Deleting the KithIdentity removes its entries.
	if err := e.dyn.Resource(v1alpha1.KithIdentities).Delete(context.Background(), "all", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitFor(t, "KithIdentity deleted", nil)
}

func waitStatus(t *testing.T, e *env, name string, pods, entries int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		u, err := e.dyn.Resource(v1alpha1.KithIdentities).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ki, err := v1alpha1.IdentityFrom(u)
		if err != nil {
			t.Fatal(err)
		}
		st := ki.Status
		ready := slices.ContainsFunc(st.Conditions, func(c metav1.Condition) bool { return c.Type == "Ready" && c.Status == metav1.ConditionTrue })
		if int(st.PodsMatched) == pods && int(st.Entries) == entries && ready {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status of %s: %+v, want %d pods matched and %d entries, Ready", name, st, pods, entries)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
