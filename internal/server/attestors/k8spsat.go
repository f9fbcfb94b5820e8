package attestors

import (
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/attestation/node/k8spsat"
	"github.com/kithid/kith/internal/config"
	"github.com/kithid/kith/internal/kubernetes"
)

// K8sPSAT builds the k8s_psat attestor for the configured clusters, each reached with its kubeconfig,
// or in-cluster when it has none. It does not contact the clusters: an API server that is down fails
// the attestations that need it, not the server's start.
func K8sPSAT(td spiffeid.TrustDomain, clusters []config.K8sCluster) (*k8spsat.Attestor, error) {
	cs := make([]k8spsat.Cluster, 0, len(clusters))
	for _, c := range clusters {
		rc, err := kubernetes.RESTConfig(c.Kubeconfig, "kith-server")
		if err != nil {
			return nil, fmt.Errorf("k8s_psat cluster %s: %w", c.Name, err)
		}
		client, err := k8spsat.NewClient(rc)
		if err != nil {
			return nil, fmt.Errorf("k8s_psat cluster %s: %w", c.Name, err)
		}
		cs = append(cs, k8spsat.Cluster{
			Name: c.Name, Kube: client, Audience: c.Audience,
			ServiceAccounts: c.ServiceAccounts, NodeLabelKeys: c.NodeLabelKeys, PodLabelKeys: c.PodLabelKeys,
		})
	}
	return k8spsat.New(k8spsat.Config{TrustDomain: td, Clusters: cs})
}
