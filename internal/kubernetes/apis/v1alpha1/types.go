// Package v1alpha1 holds Kith's Kubernetes resources, group kith.io version v1alpha1: KithIdentity
// (cluster-scoped: which pods get which SPIFFE ID) and KithGrant (namespaced: a grant kept as a resource).
// Their schemas are the CRDs in deploy/kubernetes/base/crds; these are plain structs read from the dynamic
// client's unstructured objects (no generated clientset).
package v1alpha1

import (
	"fmt"
	"strings"
	"text/template"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Group and Version of Kith's resources.
const (
	Group   = "kith.io"
	Version = "v1alpha1"
)

// The resources, for the dynamic client.
var (
	KithIdentities = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "kithidentities"}
	KithGrants     = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "kithgrants"}
)

// DefaultSPIFFEIDTemplate is the SPIFFE ID of a pod when a KithIdentity names none (the CRD's default).
const DefaultSPIFFEIDTemplate = "spiffe://{{.TrustDomain}}/ns/{{.Namespace}}/sa/{{.ServiceAccount}}"

// ConditionReady is the condition type both resources report.
const ConditionReady = "Ready"

// KithIdentity gives every pod its selectors match a SPIFFE ID made from a template.
type KithIdentity struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              KithIdentitySpec   `json:"spec"`
	Status            KithIdentityStatus `json:"status,omitempty"`
}

// KithIdentitySpec is what a KithIdentity asks for. Templates are Go templates over [TemplateData].
type KithIdentitySpec struct {
	SPIFFEIDTemplate  string                `json:"spiffeIDTemplate,omitempty"`
	PodSelector       *metav1.LabelSelector `json:"podSelector,omitempty"`
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	DNSNameTemplates  []string              `json:"dnsNameTemplates,omitempty"`
	TTL               string                `json:"ttl,omitempty"`
	JWTTTL            string                `json:"jwtTTL,omitempty"`
	FederatesWith     []string              `json:"federatesWith,omitempty"`
	Labels            map[string]string     `json:"labels,omitempty"`
}

// KithIdentityStatus is what the server reports on a KithIdentity.
type KithIdentityStatus struct {
	PodsMatched        int32              `json:"podsMatched"`
	Entries            int32              `json:"entries"`
	LastError          string             `json:"lastError,omitempty"`
	ObservedGeneration int64              `json:"observedGeneration,omitempty"`
	Conditions         []metav1.Condition `json:"conditions,omitempty"`
}

// TemplateData is what a KithIdentity's templates may use.
type TemplateData struct {
	TrustDomain     string
	ClusterName     string
	Namespace       string
	ServiceAccount  string
	PodName         string
	PodUID          string
	NodeName        string
	PodLabels       map[string]string
	PodAnnotations  map[string]string
	NamespaceLabels map[string]string
}

// KithGrant allows a caller to call a target.
type KithGrant struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              KithGrantSpec   `json:"spec"`
	Status            KithGrantStatus `json:"status,omitempty"`
}

// Party is a caller or target: a SPIFFE ID (or prefix ending in /*), or a namespace and service account
// that the trust domain's template expands.
type Party struct {
	SPIFFEID       string `json:"spiffeID,omitempty"`
	Namespace      string `json:"namespace,omitempty"`
	ServiceAccount string `json:"serviceAccount,omitempty"`
}

// KithGrantSpec is the grant a KithGrant asks for.
type KithGrantSpec struct {
	Caller  Party        `json:"caller"`
	Target  Party        `json:"target"`
	Methods []string     `json:"methods,omitempty"`
	Paths   []string     `json:"paths,omitempty"`
	Expires *metav1.Time `json:"expires,omitempty"`
	Reason  string       `json:"reason,omitempty"`
}

// KithGrantStatus is what the server reports on a KithGrant: the grant it became, or why it was refused.
type KithGrantStatus struct {
	GrantID            string             `json:"grantID,omitempty"`
	Caller             string             `json:"caller,omitempty"`
	Target             string             `json:"target,omitempty"`
	Reason             string             `json:"reason,omitempty"`
	ObservedGeneration int64              `json:"observedGeneration,omitempty"`
	Conditions         []metav1.Condition `json:"conditions,omitempty"`
}

// IdentityFrom converts an object of the dynamic client.
func IdentityFrom(u *unstructured.Unstructured) (*KithIdentity, error) {
	var o KithIdentity
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.UnstructuredContent(), &o); err != nil {
		return nil, fmt.Errorf("KithIdentity %s: %w", u.GetName(), err)
	}
	if o.Spec.SPIFFEIDTemplate == "" {
		o.Spec.SPIFFEIDTemplate = DefaultSPIFFEIDTemplate
	}
	return &o, nil
}

// GrantFrom converts an object of the dynamic client.
func GrantFrom(u *unstructured.Unstructured) (*KithGrant, error) {
	var o KithGrant
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.UnstructuredContent(), &o); err != nil {
		return nil, fmt.Errorf("KithGrant %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return &o, nil
}

// ToUnstructured converts a resource (or its status) for the dynamic client.
func ToUnstructured(o any) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
	if err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: m}, nil
}

// ServiceAccountID parses the template t (DefaultSPIFFEIDTemplate when empty) and returns the function that
// expands a {namespace, serviceAccount} shorthand of the trust domain td with it.
func ServiceAccountID(t, td string) (func(ns, sa string) (string, error), error) {
	if t == "" {
		t = DefaultSPIFFEIDTemplate
	}
	tmpl, err := template.New("service-account").Option("missingkey=error").Parse(t)
	if err != nil {
		return nil, fmt.Errorf("template %q: %w", t, err)
	}
	return func(ns, sa string) (string, error) {
		var b strings.Builder
		err := tmpl.Execute(&b, TemplateData{TrustDomain: td, Namespace: ns, ServiceAccount: sa})
		return b.String(), err
	}, nil
}
