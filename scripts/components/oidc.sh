#!/usr/bin/env bash
# Builds the example OpenID provider of github.com/zitadel/oidc (tools/oidc pins the version and registers the
# clients Kith's login uses) from the Go module proxy, once, into $KITH_TEST_CACHE/oidc-<version>/ (default
# $HOME/.cache/kith-test), and prints the binary's path: the tests tagged oidc start it as their OpenID provider.
# A cold build takes a minute or two; a warm cache returns at once.
set -euo pipefail
OIDC_VERSION=v3.52.0
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${KITH_TEST_CACHE:-$HOME/.cache/kith-test}/oidc-${OIDC_VERSION}"
if [[ -x "$cache/oidc-provider" ]]; then
	echo "$cache/oidc-provider"
	exit 0
fi
mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "building the zitadel/oidc $OIDC_VERSION example provider (a minute or two cold; cached afterwards)..." >&2
(cd "$root/tools/oidc" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags="-s -w" \
	-o "$tmp/oidc-provider" .) >&2
mv "$tmp/oidc-provider" "$cache/oidc-provider"
echo "$cache/oidc-provider"
