// Package meshimport reads service-mesh access policies — SMI's TrafficTarget and its route groups
// (package smi), Istio's AuthorizationPolicy (package istio) — into Kith grants and deny rules, exactly or
// not at all: what Kith cannot express is refused naming the object, the field and why, never widened.
//
// This package holds what both readers share: reading Kubernetes objects from YAML (several documents)
// or JSON files, directories and standard input ([Read], [ReadPath]), the [Options] that map Kubernetes
// identities to SPIFFE IDs, and the [Result] of a conversion.
package meshimport
