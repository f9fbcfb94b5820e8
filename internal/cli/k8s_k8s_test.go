//go:build k8s

package cli

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/kithid/kith/internal/config"
	"github.com/kithid/kith/internal/kubernetes/apis/v1alpha1"
	"github.com/kithid/kith/internal/kubernetes/kubetest"
)

// TestK8sStatusAndEntriesFromTheServer runs a server with controllers: true on a real API server:
// a KithIdentity's pod gets an entry (kith entry list --source k8s), a KithGrant a grant that kith can
// follows, kith k8s status shows both, and the entry cannot be deleted from the CLI.
func TestK8sStatusAndEntriesFromTheServer(t *testing.T) {
	c := kubetest.Start(t)
	if _, err := envtest.InstallCRDs(c.Config, envtest.CRDInstallOptions{
		Paths: []string{filepath.Join("..", "..", "deploy", "kubernetes", "base", "crds")}, ErrorIfPathMissing: true}); err != nil {
		t.Fatal(err)
	}
	s, err := startServerWith(t, t.TempDir(), func(cfg *config.Server) {
		cfg.NodeAttestors.K8sPSAT.Clusters = []config.K8sCluster{{Name: "test", Kubeconfig: c.KubeConfigFile(t),
			ServiceAccounts: []string{"kith:kith-agent"}, Controllers: true}}
	})
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	dyn := dynamic.NewForConfigOrDie(c.Config)
	apply := func(gvrKind string, obj map[string]any) {
		t.Helper()
		obj["apiVersion"] = "kith.io/v1alpha1"
		obj["kind"] = gvrKind
		body, _ := json.Marshal(obj)
		md := obj["metadata"].(map[string]any)
		ns, _ := md["namespace"].(string)
		res := v1alpha1.KithIdentities
		if gvrKind == "KithGrant" {
			res = v1alpha1.KithGrants
		}
		if _, err := dyn.Resource(res).Namespace(ns).Patch(context.Background(), md["name"].(string), types.ApplyPatchType, body,
			metav1.PatchOptions{FieldManager: "kith-test"}); err != nil {
			t.Fatal(err)
		}
	}
	node := c.Node(t, "node-a", nil)
	c.Namespace(t, "shop", nil)
	apply("KithIdentity", map[string]any{"metadata": map[string]any{"name": "all"}, "spec": map[string]any{}})
	c.Pod(t, kubetest.PodSpec{Namespace: "shop", Name: "web-1", ServiceAccount: "web", Node: "node-a"})
	apply("KithGrant", map[string]any{"metadata": map[string]any{"name": "web-to-api", "namespace": "shop"},
		"spec": map[string]any{"caller": map[string]any{"namespace": "shop", "serviceAccount": "web"},
			"target": map[string]any{"namespace": "shop", "serviceAccount": "api"}, "methods": []any{"GET"}}})

	var out string
	deadline := time.Now().Add(30 * time.Second)
	for {
		out = s.ok(t, "entry", "list", "--source", "k8s")
		if strings.Contains(out, "spiffe://example.org/ns/shop/sa/web") || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	agent := "spiffe://example.org/kith/agent/k8s_psat/test/" + string(node.UID)
	if !strings.Contains(out, "spiffe://example.org/ns/shop/sa/web") || !strings.Contains(out, agent) {
		t.Fatalf("kith entry list --source k8s:\n%s\nwant the pod's entry on %s", out, agent)
	}
	if out := s.ok(t, "entry", "list", "--source", "cli"); strings.Contains(out, "shop") {
		t.Errorf("kith entry list --source cli shows the k8s entry:\n%s", out)
	}
	var es struct {
		Entries []struct{ ID, Source string }
	}
	if err := json.Unmarshal([]byte(s.ok(t, "entry", "list", "--source", "k8s", "-o", "json")), &es); err != nil || len(es.Entries) != 1 {
		t.Fatalf("entries %+v, %v", es, err)
	}
	if _, errs, code := s.kith(t, "entry", "delete", es.Entries[0].ID); code == 0 || !strings.Contains(errs, "k8s:kithidentity/all/shop/web-1") {
		t.Errorf("kith entry delete of a k8s entry: exit %d, %s; want refused naming its source", code, errs)
	}

	can := func() string {
		out, _, _ := s.kith(t, "can", "spiffe://example.org/ns/shop/sa/web", "spiffe://example.org/ns/shop/sa/api", "--method", "GET", "--path", "/")
		return out
	}
	for deadline := time.Now().Add(20 * time.Second); !strings.HasPrefix(can(), "ALLOWED") && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	if got := can(); !strings.HasPrefix(got, "ALLOWED") {
		t.Fatalf("kith can after the KithGrant:\n%s", got)
	}
	st := s.ok(t, "k8s", "status")
	for _, want := range []string{"all", "shop/web-to-api", "spiffe://example.org/ns/shop/sa/api"} {
		if !strings.Contains(st, want) {
			t.Errorf("kith k8s status lacks %q:\n%s", want, st)
		}
	}
	t.Logf("kith k8s status:\n%s", st)

	// What only the controllers know: pods matched, and a KithGrant that was refused, with why.
	apply("KithGrant", map[string]any{"metadata": map[string]any{"name": "to-elsewhere", "namespace": "shop"},
		"spec": map[string]any{"caller": map[string]any{"namespace": "shop", "serviceAccount": "web"},
			"target": map[string]any{"spiffeID": "spiffe://other.org/api"}}})
	var ks k8sStatus
	for deadline := time.Now().Add(20 * time.Second); ; {
		ks = k8sStatus{} // decoding into the last answer's slices would keep fields this one omits
		if err := json.Unmarshal([]byte(s.ok(t, "k8s", "status", "-o", "json")), &ks); err != nil {
			t.Fatal(err)
		}
		if len(ks.Grants) == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	wantRefused := k8sGrant{Resource: "shop/to-elsewhere", Refused: "target: spiffe://other.org/api is outside the trust domain example.org"}
	if len(ks.Grants) != 2 || !cmp.Equal(ks.Grants[0], wantRefused, cmpopts.EquateEmpty()) {
		t.Errorf("kith k8s status -o json grants = %+v; want the refused one %+v", ks.Grants, wantRefused)
	}
	wantID := k8sIdentity{Name: "all", Template: v1alpha1.DefaultSPIFFEIDTemplate, PodsMatched: 1, Entries: 1, Example: "spiffe://example.org/ns/shop/sa/web"}
	if len(ks.Identities) != 1 || !cmp.Equal(ks.Identities[0], wantID) {
		t.Errorf("kith k8s status -o json identities = %+v; want %+v", ks.Identities, wantID)
	}
	if len(ks.Clusters) != 1 || !ks.Clusters[0].Watched || !ks.Clusters[0].Synced || ks.Clusters[0].Name != "test" {
		t.Errorf("kith k8s status -o json clusters = %+v; want test, watched and synced", ks.Clusters)
	}
	if st := s.ok(t, "k8s", "status"); !strings.Contains(st, "refused: target: spiffe://other.org/api is outside") {
		t.Errorf("kith k8s status does not say why shop/to-elsewhere was refused:\n%s", st)
	}
	if err := dyn.Resource(v1alpha1.KithGrants).Namespace("shop").Delete(context.Background(), "web-to-api", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); !strings.HasPrefix(can(), "DENIED") && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	if got := can(); !strings.HasPrefix(got, "DENIED") {
		t.Errorf("kith can after the KithGrant was deleted:\n%s", got)
	}
}
