//go:build k8s

package meshpolicy_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/meshimport"
	"github.com/kithid/kith/internal/kubernetes/kubetest"
	"github.com/kithid/kith/internal/kubernetes/meshpolicy"
	"github.com/kithid/kith/internal/store"
	"github.com/kithid/kith/internal/store/sqlite"
)

// TestK8sMeshPoliciesFollowTheCluster: SMI TrafficTargets and Istio AuthorizationPolicies created in a
// real API server become grants and deny rules; a change changes them, a delete revokes them, and an
// object Kith refuses gets a Warning Event while the others stay in force.
func TestK8sMeshPoliciesFollowTheCluster(t *testing.T) {
	c := kubetest.Start(t)
	if _, err := envtest.InstallCRDs(c.Config, envtest.CRDInstallOptions{Paths: []string{filepath.Join("testdata", "crds.yaml")}, ErrorIfPathMissing: true}); err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "kith.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	dyn := dynamic.NewForConfigOrDie(c.Config)
	c.Namespace(t, "shop", nil)
	td := spiffeid.RequireTrustDomainFromString("kith.test")
	ctrl, err := meshpolicy.New(meshpolicy.Config{Options: meshimport.Options{TrustDomain: td}, Dynamic: dyn, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctrl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	apply := func(gvr schema.GroupVersionResource, doc string) {
		t.Helper()
		var u unstructured.Unstructured
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatal(err)
		}
		r := dyn.Resource(gvr).Namespace("shop")
		old, err := r.Get(context.Background(), u.GetName(), metav1.GetOptions{})
		if err == nil {
			u.SetResourceVersion(old.GetResourceVersion())
			_, err = r.Update(context.Background(), &u, metav1.UpdateOptions{})
		} else {
			_, err = r.Create(context.Background(), &u, metav1.CreateOptions{})
		}
		if err != nil {
			t.Fatalf("apply %s: %v", u.GetName(), err)
		}
	}
	sa := func(name string) spiffeid.ID { return spiffeid.RequireFromPath(td, "/ns/shop/sa/"+name) }
	can := func(caller, target, method, path string) bool {
		gs, err := st.ListGrants(context.Background(), store.GrantFilter{})
		if err != nil {
			t.Fatal(err)
		}
		e, err := authz.New(authz.Config{})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.SetData(context.Background(), authz.Data{Grants: gs}); err != nil {
			t.Fatal(err)
		}
		d, err := e.Decide(context.Background(), authz.Input{Caller: sa(caller), Target: sa(target), Method: method, Path: path, Port: 8080})
		if err != nil {
			t.Fatal(err)
		}
		return d.Allowed
	}
	eventually := func(what string, f func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !f() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 20s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	apply(meshpolicy.HTTPRouteGroups, `
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: api-routes, namespace: shop}
spec:
  matches:
  - {name: api, pathRegex: /api, methods: ["*"]}
  - {name: metrics, pathRegex: /metrics, methods: [GET]}
`)
	apply(meshpolicy.TCPRoutes, `
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: api-port, namespace: shop}
spec: {matches: {ports: [8080]}}
`)
	tt := `
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: api-metrics, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: api, namespace: shop}
  rules:
  - {kind: TCPRoute, name: api-port}
  - {kind: HTTPRouteGroup, name: api-routes, matches: [MATCH]}
  sources: [{kind: ServiceAccount, name: prometheus, namespace: shop}]
`
	apply(meshpolicy.TrafficTargets, strings.Replace(tt, "MATCH", "metrics", 1))
	eventually("prometheus may GET /metrics", func() bool { return can("prometheus", "api", "GET", "/metrics") })
	if can("prometheus", "api", "GET", "/api") {
		t.Error("prometheus may GET /api, which the TrafficTarget does not allow")
	}
	apply(meshpolicy.TrafficTargets, strings.Replace(tt, "MATCH", "api", 1))
	eventually("changed: prometheus may GET /api and no longer /metrics", func() bool {
		return can("prometheus", "api", "GET", "/api") && !can("prometheus", "api", "GET", "/metrics")
	})

	// Refused: a route group that does not exist. The event names it; the other TrafficTarget stays.
	apply(meshpolicy.TrafficTargets, `
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: broken, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: api, namespace: shop}
  rules: [{kind: HTTPRouteGroup, name: nowhere}]
  sources: [{kind: ServiceAccount, name: web, namespace: shop}]
`)
	eventually("a Warning event on the refused TrafficTarget", func() bool {
		evs, err := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "events"}).Namespace("shop").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs.Items {
			obj, _, _ := unstructured.NestedString(ev.Object, "involvedObject", "name")
			msg, _, _ := unstructured.NestedString(ev.Object, "message")
			if obj == "broken" && strings.Contains(msg, "HTTPRouteGroup shop/nowhere is missing") {
				return true
			}
		}
		return false
	})
	if st := ctrl.Status()["TrafficTarget shop/broken"]; !strings.HasPrefix(st, "refused: ") {
		t.Errorf("Status of the refused TrafficTarget = %q", st)
	}
	if !can("prometheus", "api", "GET", "/api") {
		t.Error("a refused TrafficTarget revoked another one's grants")
	}

	// Istio: a DENY wins over the SMI grant.
	apply(meshpolicy.AuthzPolicies, `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: shop}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: ["/api/admin*"]}}]}]
`)
	eventually("the DENY policy denies /api/admin", func() bool { return !can("prometheus", "api", "GET", "/api/admin/x") })
	if !can("prometheus", "api", "GET", "/api/users") {
		t.Error("the DENY policy denies more than it says")
	}

	if err := dyn.Resource(meshpolicy.TrafficTargets).Namespace("shop").Delete(context.Background(), "api-metrics", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("deleted: revoked", func() bool { return !can("prometheus", "api", "GET", "/api/users") })
	gs, err := st.ListGrants(context.Background(), store.GrantFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gs {
		if !strings.HasPrefix(g.Source, "istio:shop/deny-admin") {
			t.Errorf("grant %s (%s) left after the delete", g.ID, g.Source)
		}
	}
}
