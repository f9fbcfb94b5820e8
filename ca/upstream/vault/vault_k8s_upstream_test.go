//go:build upstream && k8s

package vault_test

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	vaultapi "github.com/hashicorp/vault/api"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/catest"
	"github.com/kithid/kith/ca/upstream/upstreamtest"
	"github.com/kithid/kith/ca/upstream/vault"
	"github.com/kithid/kith/internal/kubernetes/kubetest"
)

// Kubernetes auth: Vault's kubernetes auth method, pointed at a real kube-apiserver (TokenReview with a
// reviewer service account bound to system:auth-delegator), logs the Kith server in with its projected
// service-account token, and Vault's PKI mount signs the intermediate; a token of another service account
// is refused.
func TestVaultUpstreamKubernetesAuth(t *testing.T) {
	kc := kubetest.Start(t)
	v := upstreamtest.StartVault(t)
	kc.ServiceAccount(t, "vault", "reviewer")
	kc.ServiceAccount(t, "kith", "kith-server")
	kc.ServiceAccount(t, "kith", "intruder")
	if _, err := kc.Client.RbacV1().ClusterRoleBindings().Create(context.Background(), &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "vault-reviewer"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:auth-delegator"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "vault", Name: "reviewer"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	vc := v.Client()
	if err := vc.Sys().EnableAuthWithOptions("kubernetes", &vaultapi.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		t.Fatal(err)
	}
	for p, data := range map[string]map[string]any{
		"auth/kubernetes/config": {"kubernetes_host": kc.Config.Host, "kubernetes_ca_cert": string(kc.Config.CAData),
			"token_reviewer_jwt": kc.Token(t, "vault", "reviewer", kubetest.TokenOptions{Audience: kc.Issuer()})},
		"auth/kubernetes/role/kith": {"bound_service_account_names": "kith-server", "bound_service_account_namespaces": "kith",
			"token_policies": "kith", "token_ttl": "10m", "audience": "vault"},
	} {
		if _, err := vc.Logical().Write(p, data); err != nil {
			t.Fatalf("vault write %s: %v", p, err)
		}
	}
	tokenFile := func(sa string) string {
		f := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(f, []byte(kc.Token(t, "kith", sa, kubetest.TokenOptions{Audience: "vault"})), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}

	up, err := vault.New(vault.Config{Address: v.Addr, Kubernetes: vault.Kubernetes{Role: "kith", TokenFile: tokenFile("kith-server")}})
	if err != nil {
		t.Fatal(err)
	}
	c := catest.NewCA(t, td, func(c *ca.Config) { c.Upstream = up })
	_, chain := catest.IssueSVID(t, c, workload, 0)
	verifies(t, []*x509.Certificate{v.Root}, chain)

	intruder, err := vault.New(vault.Config{Address: v.Addr, Kubernetes: vault.Kubernetes{Role: "kith", TokenFile: tokenFile("intruder")}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := intruder.X509Roots(context.Background()); err == nil {
		t.Error("Vault let in the token of service account kith/intruder with role kith")
	}
}
