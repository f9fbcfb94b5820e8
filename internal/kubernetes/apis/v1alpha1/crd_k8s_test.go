//go:build k8s

package v1alpha1_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/kithid/kith/internal/kubernetes/apis/v1alpha1"
	"github.com/kithid/kith/internal/kubernetes/kubetest"
)

// CRDDir is where the CRDs live in the repository.
var crdDir = filepath.Join("..", "..", "..", "..", "deploy", "kubernetes", "base", "crds")

// TestK8sCRDSchemas applies valid and invalid KithIdentity and KithGrant objects to a real API server
// with server-side apply: the CRDs' schemas accept the first and refuse the second, naming the field.
func TestK8sCRDSchemas(t *testing.T) {
	c := kubetest.Start(t)
	if _, err := envtest.InstallCRDs(c.Config, envtest.CRDInstallOptions{Paths: []string{crdDir}, ErrorIfPathMissing: true}); err != nil {
		t.Fatal(err)
	}
	dyn := dynamic.NewForConfigOrDie(c.Config)
	c.Namespace(t, "shop", nil)
	tests := []struct {
		name    string
		yaml    string
		wantErr string // empty: accepted
	}{
		{name: "identity with defaults", yaml: `kind: KithIdentity
metadata: {name: all}
spec: {}`},
		{name: "identity with everything", yaml: `kind: KithIdentity
metadata: {name: full}
spec:
  spiffeIDTemplate: "spiffe://{{.TrustDomain}}/ns/{{.Namespace}}/sa/{{.ServiceAccount}}"
  podSelector: {matchLabels: {app: web}, matchExpressions: [{key: tier, operator: In, values: [front]}]}
  namespaceSelector: {matchLabels: {kith.io/enabled: "true"}}
  dnsNameTemplates: ["{{.PodName}}.{{.Namespace}}.svc"]
  ttl: 30m
  jwtTTL: 5m
  labels: {env: "{{index .NamespaceLabels \"env\"}}", team: payments}`},
		{name: "identity template not a SPIFFE ID", yaml: `kind: KithIdentity
metadata: {name: bad-template}
spec: {spiffeIDTemplate: "https://x/{{.Namespace}}"}`, wantErr: "spec.spiffeIDTemplate"},
		{name: "identity federating with another trust domain is accepted", yaml: `kind: KithIdentity
metadata: {name: federating}
spec: {spiffeIDTemplate: "spiffe://{{.TrustDomain}}/ns/{{.Namespace}}", federatesWith: [partner.example]}`},
		{name: "identity bad ttl", yaml: `kind: KithIdentity
metadata: {name: bad-ttl}
spec: {ttl: soon}`, wantErr: "spec.ttl"},
		{name: "identity bad selector operator", yaml: `kind: KithIdentity
metadata: {name: bad-op}
spec: {podSelector: {matchExpressions: [{key: a, operator: Near}]}}`, wantErr: "operator"},
		{name: "grant by SPIFFE IDs", yaml: `kind: KithGrant
metadata: {name: ids, namespace: shop}
spec:
  caller: {spiffeID: "spiffe://example.org/ns/shop/sa/web"}
  target: {spiffeID: "spiffe://example.org/ns/shop/sa/api"}
  methods: [GET, POST]
  paths: ["/api/*"]
  expires: "2030-01-01T00:00:00Z"
  reason: checkout`},
		{name: "grant by shorthand", yaml: `kind: KithGrant
metadata: {name: short, namespace: shop}
spec:
  caller: {namespace: shop, serviceAccount: web}
  target: {namespace: shop, serviceAccount: api}`},
		{name: "grant without target", yaml: `kind: KithGrant
metadata: {name: no-target, namespace: shop}
spec: {caller: {spiffeID: "spiffe://example.org/a"}}`, wantErr: "spec.target"},
		{name: "grant with both forms", yaml: `kind: KithGrant
metadata: {name: both, namespace: shop}
spec:
  caller: {spiffeID: "spiffe://example.org/a", namespace: shop, serviceAccount: web}
  target: {spiffeID: "spiffe://example.org/b"}`, wantErr: "spec.caller"},
		{name: "grant with half a shorthand", yaml: `kind: KithGrant
metadata: {name: half, namespace: shop}
spec:
  caller: {namespace: shop}
  target: {spiffeID: "spiffe://example.org/b"}`, wantErr: "spec.caller"},
		{name: "grant with an unknown method", yaml: `kind: KithGrant
metadata: {name: method, namespace: shop}
spec:
  caller: {spiffeID: "spiffe://example.org/a"}
  target: {spiffeID: "spiffe://example.org/b"}
  methods: [FETCH]`, wantErr: "spec.methods"},
		{name: "grant with a bad expiry", yaml: `kind: KithGrant
metadata: {name: expires, namespace: shop}
spec:
  caller: {spiffeID: "spiffe://example.org/a"}
  target: {spiffeID: "spiffe://example.org/b"}
  expires: tomorrow`, wantErr: "spec.expires"},
		{name: "grant with a relative path", yaml: `kind: KithGrant
metadata: {name: path, namespace: shop}
spec:
  caller: {spiffeID: "spiffe://example.org/a"}
  target: {spiffeID: "spiffe://example.org/b"}
  paths: [api]`, wantErr: "spec.paths"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var u unstructured.Unstructured
			if err := yaml.Unmarshal([]byte("apiVersion: kith.io/v1alpha1\n"+tt.yaml), &u.Object); err != nil {
				t.Fatal(err)
			}
			gvr := v1alpha1.KithIdentities
			if u.GetKind() == "KithGrant" {
				gvr = v1alpha1.KithGrants
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			body, _ := u.MarshalJSON()
			var err error
			deadline := time.Now().Add(10 * time.Second)
			for {
				_, err = dyn.Resource(gvr).Namespace(u.GetNamespace()).Patch(ctx, u.GetName(), types.ApplyPatchType, body,
					metav1.PatchOptions{FieldManager: "kith-test"})
				// The CRDs take a moment to be served after they are established.
				if err == nil || !strings.Contains(err.Error(), "the server could not find the requested resource") || time.Now().After(deadline) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("apply = %v, want a refusal naming %s", err, tt.wantErr)
			}
			if tt.wantErr == "" && gvr == v1alpha1.KithIdentities {
				got, err := dyn.Resource(gvr).Get(ctx, u.GetName(), metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				ki, err := v1alpha1.IdentityFrom(got)
				if err != nil {
					t.Fatal(err)
				}
				if ki.Spec.SPIFFEIDTemplate == "" {
					t.Error("spiffeIDTemplate not defaulted")
				}
			}
		})
	}
}
