#!/usr/bin/env bash
# Builds the Kubernetes test components (kube-apiserver, etcd and kubectl) from the Go module proxy, once, into
# $KITH_TEST_CACHE/kube-<versions>/ (default $HOME/.cache/kith-test), and prints that directory: the tests use it
# as KUBEBUILDER_ASSETS (controller-runtime's envtest). A cold build takes tens of minutes on 2 cores; a warm
# cache returns at once.
set -euo pipefail
KUBE_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${KITH_TEST_CACHE:-$HOME/.cache/kith-test}/kube-${KUBE_VERSION}-etcd-${ETCD_VERSION}"
if [[ -x "$cache/kube-apiserver" && -x "$cache/etcd" && -x "$cache/kubectl" ]]; then
	echo "$cache"
	exit 0
fi
mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
if [[ ! -x "$cache/etcd" ]]; then
	echo "building etcd $ETCD_VERSION (about 2 minutes)..." >&2
	(cd "$root/tools/etcd" && go build -trimpath -ldflags="-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3) >&2
	mv "$tmp/etcd" "$cache/etcd"
fi
if [[ ! -x "$cache/kube-apiserver" ]]; then
	echo "building kube-apiserver $KUBE_VERSION (tens of minutes cold; cached afterwards)..." >&2
	(cd "$root/tools/kube" && go build -trimpath \
		-ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION" \
		-o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver) >&2
	mv "$tmp/kube-apiserver" "$cache/kube-apiserver"
fi
if [[ ! -x "$cache/kubectl" ]]; then
	echo "building kubectl $KUBE_VERSION (a few minutes cold)..." >&2
	(cd "$root/tools/kube" && go build -trimpath \
		-ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION" \
		-o "$tmp/kubectl" k8s.io/kubernetes/cmd/kubectl) >&2
	mv "$tmp/kubectl" "$cache/kubectl"
fi
echo "$cache"
