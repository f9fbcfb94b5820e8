package kithgrant

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic/fake"

	"github.com/kithid/kith/internal/kubernetes/apis/v1alpha1"
	"github.com/kithid/kith/internal/store/sqlite"
)

// TestPartyExpandsShorthandsByTheClusterTemplate: a {namespace, serviceAccount} shorthand becomes the SPIFFE
// ID the configured template gives (the cluster's scheme), the default template's otherwise, and an ID outside
// the trust domain is refused.
func TestPartyExpandsShorthandsByTheClusterTemplate(t *testing.T) {
	st, err := sqlite.Open(t.Context(), sqlite.Config{Path: t.TempDir() + "/kith.db"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	dyn := fake.NewSimpleDynamicClient(runtime.NewScheme())
	td := spiffeid.RequireTrustDomainFromString("kith.test")
	tests := []struct {
		name, template string
		party          v1alpha1.Party
		want, wantErr  string
	}{
		{name: "default template", party: v1alpha1.Party{Namespace: "shop", ServiceAccount: "web"},
			want: "spiffe://kith.test/ns/shop/sa/web"},
		{name: "the cluster's template", template: "spiffe://{{.TrustDomain}}/k8s/prod/{{.Namespace}}/{{.ServiceAccount}}",
			party: v1alpha1.Party{Namespace: "shop", ServiceAccount: "web"}, want: "spiffe://kith.test/k8s/prod/shop/web"},
		{name: "a SPIFFE ID is taken as it is", template: "spiffe://{{.TrustDomain}}/k8s/{{.Namespace}}/{{.ServiceAccount}}",
			party: v1alpha1.Party{SPIFFEID: "spiffe://kith.test/ns/shop/sa/web"}, want: "spiffe://kith.test/ns/shop/sa/web"},
		{name: "a template outside the trust domain", template: "spiffe://other.test/{{.Namespace}}/{{.ServiceAccount}}",
			party: v1alpha1.Party{Namespace: "shop", ServiceAccount: "web"}, wantErr: "spiffe://other.test/shop/web is outside the trust domain kith.test"},
		{name: "half a shorthand", party: v1alpha1.Party{Namespace: "shop"}, wantErr: "give spiffeID, or namespace and serviceAccount"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(Config{TrustDomain: td, Template: tt.template, Dynamic: dyn, Store: st})
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.party(tt.party)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("party = %q, %v; want error %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("party = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
