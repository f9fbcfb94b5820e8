// Package kubernetes is how the server reaches a Kubernetes API server: client configuration from a
// kubeconfig file or in-cluster. The attestors that speak Kubernetes (attestation/node/k8spsat,
// attestation/workload/k8s) take the client it makes; nothing else in Kith imports client-go.
package kubernetes

import (
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// RESTConfig is the client configuration of the cluster the kubeconfig file names, or, when kubeconfig
// is empty, of the cluster the process runs in (its pod's service account). It does not contact the
// cluster. Build typed clients of the API groups needed from it rather than the whole clientset, which
// links every group's client into the binary.
func RESTConfig(kubeconfig, userAgent string) (*rest.Config, error) {
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
	rc.QPS, rc.Burst = 50, 100
	rc.UserAgent = userAgent
	return rc, nil
}
