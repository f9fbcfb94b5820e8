package attestors

import (
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kithid/kith/attestation/node/k8spsat"
	"github.com/kithid/kith/internal/config"
)

// K8sPSAT builds the k8s_psat attestor for the configured clusters, each reached with its kubeconfig,
// or in-cluster when it has none. It does not contact the clusters: an API server that is down fails
// the attestations that need it, not the server's start.
func K8sPSAT(td spiffeid.TrustDomain, clusters []config.K8sCluster) (*k8spsat.Attestor, error) {
	cs := make([]k8spsat.Cluster, 0, len(clusters))
	for _, c := range clusters {
		rc, err := RESTConfig(c.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("k8s_psat cluster %s: %w", c.Name, err)
		}
		client, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return nil, fmt.Errorf("k8s_psat cluster %s: %w", c.Name, err)
		}
		cs = append(cs, k8spsat.Cluster{
			Name: c.Name, Kube: k8spsat.Client{Interface: client}, Audience: c.Audience,
			ServiceAccounts: c.ServiceAccounts, NodeLabelKeys: c.NodeLabelKeys, PodLabelKeys: c.PodLabelKeys,
		})
	}
	return k8spsat.New(k8spsat.Config{TrustDomain: td, Clusters: cs})
}

// RESTConfig is the client configuration of a cluster: from the kubeconfig file, or, when kubeconfig is
// empty, in-cluster (the pod's service account).
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	var rc *rest.Config
	var err error
	if kubeconfig == "" {
		rc, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster config: %w (outside the cluster, set its kubeconfig)", err)
		}
	} else {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
		}
	}
	rc.UserAgent = "kith-server"
	rc.QPS, rc.Burst = 50, 100
	return rc, nil
}
