// Package deploy holds no code: its tests check the manifests under deploy/ (kustomize base and
// overlays, the Helm chart, the example, the Dockerfile). Without tags they parse and cross-check the
// files; with the tag k8s they apply them to a real kube-apiserver and exercise the RBAC they grant.
package deploy
