//go:build k8s

package kithgrant_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/internal/kubernetes/apis/v1alpha1"
	"github.com/kithid/kith/internal/kubernetes/kithgrant"
	"github.com/kithid/kith/internal/kubernetes/kubetest"
	"github.com/kithid/kith/internal/store"
	"github.com/kithid/kith/internal/store/sqlite"
)

const (
	web = "spiffe://kith.test/ns/shop/sa/web"
	api = "spiffe://kith.test/ns/shop/sa/api"
)

// TestK8sKithGrantsFollowResources: a KithGrant becomes a grant (shorthands expanded), an update
// changes it, a delete revokes it, an invalid one is refused with the reason in its status, and a
// controller restarted after a delete revokes what is gone.
func TestK8sKithGrantsFollowResources(t *testing.T) {
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
	dyn := dynamic.NewForConfigOrDie(c.Config)
	c.Namespace(t, "shop", nil)
	start := func() func() {
		ctrl, err := kithgrant.New(kithgrant.Config{TrustDomain: spiffeid.RequireTrustDomainFromString("kith.test"), Dynamic: dyn, Store: st})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- ctrl.Run(ctx) }()
		stopped := false
		stop := func() {
			if !stopped {
				stopped = true
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
			}
		}
		t.Cleanup(stop)
		return stop
	}
	stop := start()

	apply := func(name string, spec map[string]any) {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"apiVersion": "kith.io/v1alpha1", "kind": "KithGrant",
			"metadata": map[string]any{"name": name, "namespace": "shop"}, "spec": spec})
		force := true
		if _, err := dyn.Resource(v1alpha1.KithGrants).Namespace("shop").Patch(context.Background(), name, types.ApplyPatchType, body,
			metav1.PatchOptions{FieldManager: "kith-test", Force: &force}); err != nil {
			t.Fatalf("apply %s: %v", name, err)
		}
	}
	// can is what `kith can` decides from the grants alone: some grant covers caller, target, method, path.
	can := func(caller, target, method, path string) bool {
		gs, err := st.ListGrants(context.Background(), store.GrantFilter{})
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range gs {
			if grant.Covers(g.Caller, caller) && grant.Covers(g.Target, target) &&
				(len(g.Methods) == 0 || contains(g.Methods, method)) && (len(g.Paths) == 0 || matchAny(g.Paths, path)) {
				return true
			}
		}
		return false
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
	status := func(name string) v1alpha1.KithGrantStatus {
		u, err := dyn.Resource(v1alpha1.KithGrants).Namespace("shop").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		kg, err := v1alpha1.GrantFrom(u)
		if err != nil {
			t.Fatal(err)
		}
		return kg.Status
	}

	apply("web-to-api", map[string]any{"caller": map[string]any{"namespace": "shop", "serviceAccount": "web"},
		"target": map[string]any{"spiffeID": api}, "methods": []any{"GET"}, "paths": []any{"/api/*"}})
	eventually("created: web may GET /api/x", func() bool { return can(web, api, "GET", "/api/x") })
	if can(web, api, "POST", "/api/x") || can(api, web, "GET", "/api/x") {
		t.Error("the grant allows more than it says")
	}
	eventually("status names the grant", func() bool {
		s := status("web-to-api")
		return strings.HasPrefix(s.GrantID, "k8s-") && s.Caller == web && s.Target == api
	})
	gs, _ := st.ListGrants(context.Background(), store.GrantFilter{})
	if len(gs) != 1 || gs[0].Source != "k8s:shop/web-to-api" {
		t.Fatalf("grants %+v, want one with source k8s:shop/web-to-api", gs)
	}

	apply("web-to-api", map[string]any{"caller": map[string]any{"namespace": "shop", "serviceAccount": "web"},
		"target": map[string]any{"spiffeID": api}, "methods": []any{"GET", "POST"}, "paths": []any{"/api/*"}})
	eventually("updated: web may POST", func() bool { return can(web, api, "POST", "/api/x") })

	// Refused by Kith (the schema cannot say): another trust domain, a path that can never match, expired.
	apply("elsewhere", map[string]any{"caller": map[string]any{"spiffeID": "spiffe://other.test/x"}, "target": map[string]any{"spiffeID": api}})
	apply("dots", map[string]any{"caller": map[string]any{"spiffeID": web}, "target": map[string]any{"spiffeID": api}, "paths": []any{"/a/../b"}})
	apply("old", map[string]any{"caller": map[string]any{"spiffeID": web}, "target": map[string]any{"spiffeID": api}, "expires": "2020-01-01T00:00:00Z"})
	for name, why := range map[string]string{"elsewhere": "outside the trust domain", "dots": "can never match", "old": "expired"} {
		eventually("status of "+name+" says "+why, func() bool {
			s := status(name)
			return s.GrantID == "" && strings.Contains(s.Reason, why)
		})
	}

	if err := dyn.Resource(v1alpha1.KithGrants).Namespace("shop").Delete(context.Background(), "web-to-api", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("deleted: revoked", func() bool { return !can(web, api, "GET", "/api/x") })

	// Deleted while the controller is down: revoked when it starts again.
	apply("again", map[string]any{"caller": map[string]any{"spiffeID": web}, "target": map[string]any{"spiffeID": api}})
	eventually("again granted", func() bool { return can(web, api, "GET", "/") })
	stop()
	if err := dyn.Resource(v1alpha1.KithGrants).Namespace("shop").Delete(context.Background(), "again", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	start()
	eventually("revoked after the restart", func() bool { return !can(web, api, "GET", "/") })
}

func contains(ms []string, m string) bool {
	for _, x := range ms {
		if x == m {
			return true
		}
	}
	return false
}

func matchAny(ps []string, p string) bool {
	for _, x := range ps {
		if grant.MatchPath(x, p) {
			return true
		}
	}
	return false
}
