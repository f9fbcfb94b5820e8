// Package controllers makes the server's Kubernetes controllers of one cluster: entries for the pods
// KithIdentity resources select (package identity), grants from KithGrant resources (package kithgrant),
// and grants and deny rules from SMI and Istio policies (package meshpolicy).
package controllers

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/client-go/dynamic"

	"github.com/kithid/kith/authz/meshimport"
	"github.com/kithid/kith/internal/kubernetes"
	"github.com/kithid/kith/internal/kubernetes/apis/v1alpha1"
	"github.com/kithid/kith/internal/kubernetes/identity"
	"github.com/kithid/kith/internal/kubernetes/kithgrant"
	"github.com/kithid/kith/internal/kubernetes/meshpolicy"
)

// Store is what the controllers write.
type Store interface {
	identity.Store
	kithgrant.Store
	meshpolicy.Store
}

// Cluster is the cluster the controllers watch.
type Cluster struct {
	// Name is the cluster's name in k8s_psat agent IDs.
	Name string
	// Kubeconfig reaches its API server; empty: in-cluster.
	Kubeconfig string
	// ServiceAccountTemplate expands KithGrant {namespace, serviceAccount} shorthands; empty: the default.
	ServiceAccountTemplate string
}

// Set is the controllers of one cluster.
type Set struct {
	// Runs are the controllers' Run functions; each returns when its context ends.
	Runs       []func(context.Context) error
	cluster    string
	identities *identity.Controller
	grants     *kithgrant.Controller
	mesh       *meshpolicy.Controller
}

// Status is what the controllers know of the cluster's resources.
type Status struct {
	Cluster    string
	Synced     bool
	Identities []identity.IdentityStatus
	Grants     []kithgrant.ObjectStatus
	Mesh       map[string]string // mesh policy object -> its effect (meshpolicy.Controller.Status)
}

// Status returns what the controllers know now.
func (s *Set) Status() Status {
	return Status{Cluster: s.cluster, Synced: s.identities.Synced() && s.grants.Synced(),
		Identities: s.identities.Status(), Grants: s.grants.Status(), Mesh: s.mesh.Status()}
}

// New makes the controllers of one cluster.
func New(td spiffeid.TrustDomain, cl Cluster, st Store, log *slog.Logger) (*Set, error) {
	cluster := cl.Name
	rc, err := kubernetes.RESTConfig(cl.Kubeconfig, "kith-server")
	if err != nil {
		return nil, fmt.Errorf("node_attestors.k8s_psat cluster %s: %w", cluster, err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", cluster, err)
	}
	ids, err := identity.New(identity.Config{TrustDomain: td, Cluster: cluster, Dynamic: dyn, Store: st,
		Logger: log.With("controller", "kithidentity")})
	if err != nil {
		return nil, err
	}
	grants, err := kithgrant.New(kithgrant.Config{TrustDomain: td, Template: cl.ServiceAccountTemplate, Dynamic: dyn, Store: st, Logger: log.With("controller", "kithgrant")})
	if err != nil {
		return nil, err
	}
	opts := meshimport.Options{TrustDomain: td}
	if cl.ServiceAccountTemplate != "" {
		if opts.ServiceAccountID, err = v1alpha1.ServiceAccountID(cl.ServiceAccountTemplate, td.Name()); err != nil {
			return nil, fmt.Errorf("cluster %s: service account template: %w", cluster, err)
		}
	}
	mesh, err := meshpolicy.New(meshpolicy.Config{Options: opts, Dynamic: dyn, Store: st, Logger: log.With("controller", "meshpolicy")})
	if err != nil {
		return nil, err
	}
	return &Set{Runs: []func(context.Context) error{ids.Run, grants.Run, mesh.Run}, cluster: cluster, identities: ids, grants: grants, mesh: mesh}, nil
}
