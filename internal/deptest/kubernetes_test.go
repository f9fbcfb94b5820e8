package deptest

import (
	"strings"
	"testing"
)

// The kith binary links the Kubernetes API types it uses, not client-go's clientset scheme, which
// registers every API group (≈ 60 packages, +25 MB of binary) for the few calls Kith makes.
func TestKithLinksOnlyTheKubernetesAPIGroupsItUses(t *testing.T) {
	allowed := map[string]bool{"k8s.io/api/core/v1": true, "k8s.io/api/authentication/v1": true}
	for _, p := range list(t, "-deps", "./cmd/kith") {
		switch {
		case p.ImportPath == "k8s.io/client-go/kubernetes/scheme":
			t.Errorf("bin/kith links %s (every API group): use a rest client over a scheme of the groups needed (see attestation/node/k8spsat)", p.ImportPath)
		case strings.HasPrefix(p.ImportPath, "k8s.io/api/") && !allowed[p.ImportPath]:
			t.Errorf("bin/kith links %s: add it here if Kith now uses that API group", p.ImportPath)
		}
	}
}
