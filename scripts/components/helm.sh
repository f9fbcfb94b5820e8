#!/usr/bin/env bash
# Builds helm from the Go module proxy (tools/helm pins the version), once, into
# $KITH_TEST_CACHE/helm-<version>/ (default $HOME/.cache/kith-test), and prints the binary's path: the deploy
# tests (tag k8s) render deploy/helm/kith with it. A cold build takes a few minutes; a warm cache returns at once.
set -euo pipefail
HELM_VERSION=v4.3.2
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${KITH_TEST_CACHE:-$HOME/.cache/kith-test}/helm-${HELM_VERSION}"
if [[ -x "$cache/helm" ]]; then
	echo "$cache/helm"
	exit 0
fi
mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "building helm $HELM_VERSION (a few minutes cold; cached afterwards)..." >&2
(cd "$root/tools/helm" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath \
	-ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
	-o "$tmp/helm" helm.sh/helm/v4/cmd/helm) >&2
mv "$tmp/helm" "$cache/helm"
echo "$cache/helm"
