//go:build k8s && linux

package k8s_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

var authorizationPolicies = schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "authorizationpolicies"}

// meshEnv is setupE2E with two pods on the agent's node (shop/web calls shop/api) and one ext_authz client
// kept open, as the sidecar keeps its connection.
type meshEnv struct {
	*e2e
	dyn      dynamic.Interface
	authz    authv3.AuthorizationClient
	web, api spiffeid.ID
}

func setupMesh(tb testing.TB) *meshEnv {
	e := setupE2E(tb)
	e.podOf(tb, e.spawn(tb), "web-1", "web")
	e.podOf(tb, e.spawn(tb), "api-1", "api")
	conn, err := grpc.NewClient("unix://"+e.authz, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return &meshEnv{e2e: e, dyn: dynamic.NewForConfigOrDie(e.c.Config), authz: authv3.NewAuthorizationClient(conn),
		web: spiffeid.RequireFromString("spiffe://kith.test/ns/shop/sa/web"), api: spiffeid.RequireFromString("spiffe://kith.test/ns/shop/sa/api")}
}

// allowed asks the agent's ext_authz whether web may GET path on api.
func (m *meshEnv) allowed(tb testing.TB, path string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := m.authz.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Principal: m.web.String()},
		Destination: &authv3.AttributeContext_Peer{Principal: m.api.String()},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: path, Scheme: "https", Protocol: "HTTP/2",
			Headers: map[string]string{":method": "GET", ":path": path},
		}},
	}})
	if err != nil {
		tb.Fatalf("ext_authz: %v", err)
	}
	return resp.GetStatus().GetCode() == 0
}

// setPolicy creates or updates the AuthorizationPolicy shop/api-readers: web may GET path on the service
// accounts of shop. It returns when the API server has stored it.
func (m *meshEnv) setPolicy(tb testing.TB, path string) {
	doc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
		"metadata": map[string]any{"name": "api-readers", "namespace": "shop"},
		"spec": map[string]any{"action": "ALLOW", "rules": []any{map[string]any{
			"from": []any{map[string]any{"source": map[string]any{"principals": []any{"cluster.local/ns/shop/sa/web"}}}},
			"to":   []any{map[string]any{"operation": map[string]any{"methods": []any{"GET"}, "paths": []any{path}}}},
		}}},
	}}
	r := m.dyn.Resource(authorizationPolicies).Namespace("shop")
	ctx := context.Background()
	old, err := r.Get(ctx, "api-readers", metav1.GetOptions{})
	if err == nil {
		doc.SetResourceVersion(old.GetResourceVersion())
		_, err = r.Update(ctx, doc, metav1.UpdateOptions{})
	} else {
		_, err = r.Create(ctx, doc, metav1.CreateOptions{})
	}
	if err != nil {
		tb.Fatalf("apply AuthorizationPolicy shop/api-readers: %v", err)
	}
}

// change moves the policy's path from the previous one to /v<i> and returns the time from the API server
// storing it to the agent's ext_authz allowing the new path and no longer the previous one.
func (m *meshEnv) change(tb testing.TB, i int) time.Duration {
	path, prev := fmt.Sprintf("/v%d", i), fmt.Sprintf("/v%d", i-1)
	m.setPolicy(tb, path)
	t0 := time.Now()
	deadline := t0.Add(20 * time.Second)
	for !m.allowed(tb, path) || m.allowed(tb, prev) {
		if time.Now().After(deadline) {
			tb.Fatalf("AuthorizationPolicy shop/api-readers changed to GET %s: the agent did not enforce it within 20s", path)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(t0)
}

// BenchmarkMeshPolicyChangeToAgent: an Istio AuthorizationPolicy in the API server changes (the update call
// returned) → the server's mesh policy controller replaces the grants of istio:shop/api-readers → the Sync
// stream pushes them → the agent serving the target enforces it (its ext_authz allows the new path and
// denies the old one), 100 changes one after another.
func BenchmarkMeshPolicyChangeToAgent(b *testing.B) {
	const n = 100
	m := setupMesh(b)
	for i := range 3 { // warm up
		m.change(b, i+1)
	}
	b.ResetTimer()
	next := 4
	for it := range b.N {
		ds := make([]time.Duration, n)
		for i := range ds {
			ds[i] = m.change(b, next)
			next++
		}
		b.Logf("%d AuthorizationPolicy changes, update returned → enforced by the agent's ext_authz: p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms (load average %s)",
			n, ms(percentile(ds, .5)), ms(percentile(ds, .9)), ms(percentile(ds, .99)), ms(percentile(ds, 1)), loadavg())
		if it == 0 {
			b.ReportMetric(ms(percentile(ds, .5)), "p50-ms")
			b.ReportMetric(ms(percentile(ds, .99)), "p99-ms")
		}
	}
}

// TestK8sMeshPolicyEnforcedByTheAgent is the benchmark's path as a test (make test-k8s): with no policy web
// may not call api; an AuthorizationPolicy created in the API server is enforced by the agent serving api
// (that path and method only), a change moves it, and deleting the policy revokes it.
func TestK8sMeshPolicyEnforcedByTheAgent(t *testing.T) {
	m := setupMesh(t)
	if m.allowed(t, "/v1") {
		t.Fatal("web may call api before any policy")
	}
	for i := 1; i <= 3; i++ {
		took := m.change(t, i)
		t.Logf("policy change %d enforced by the agent %s after the API server stored it", i, took.Round(time.Millisecond))
	}
	if m.allowed(t, "/v1") || m.allowed(t, "/other") {
		t.Error("web may still call a path the policy no longer allows, or one it never allowed")
	}
	if err := m.dyn.Resource(authorizationPolicies).Namespace("shop").Delete(context.Background(), "api-readers", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deleted AuthorizationPolicy revoked on the agent", 20*time.Second, func() bool { return !m.allowed(t, "/v3") })
}
