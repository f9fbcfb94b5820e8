#!/usr/bin/env bash
# Builds the Vault server the upstream-CA tests run in dev mode, once, into
# $KITH_TEST_CACHE/vault-<version>/ (default $HOME/.cache/kith-test), and prints that directory.
#
# github.com/hashicorp/vault@v1.21.4 does not build as published: its code sits between vault/sdk v0.20.0
# and v0.21.0. So the module is downloaded from the proxy into a build dir as vault-src, patched at the
# call sites that differ from sdk v0.21.0 (tools/vault/vault-v1.21.4.patch, pinned to this version), and
# built with tools/vault/go.mod (replaces: vault => ./vault-src, sdk v0.21.0, api v1.22.0, the api/auth
# modules, and Vault's own keyring/signedxml replaces). Tens of minutes cold; a warm cache returns at once.
set -euo pipefail
VAULT_VERSION=v1.21.4
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${KITH_TEST_CACHE:-$HOME/.cache/kith-test}/vault-${VAULT_VERSION}"
if [[ -x "$cache/vault" ]]; then
	echo "$cache"
	exit 0
fi
mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.build.XXXXXX")"
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
echo "building vault $VAULT_VERSION (tens of minutes cold; cached afterwards)..." >&2
src="$(cd "$tmp" && go mod download -json "github.com/hashicorp/vault@$VAULT_VERSION" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
if [[ -z "$src" || ! -d "$src" ]]; then
	echo "vault.sh: could not download github.com/hashicorp/vault@$VAULT_VERSION from the module proxy" >&2
	exit 1
fi
cp -R "$src" "$tmp/vault-src"
chmod -R u+w "$tmp/vault-src"
patch -s -p1 -d "$tmp/vault-src" < "$root/tools/vault/vault-${VAULT_VERSION}.patch"
cp "$root/tools/vault/go.mod" "$root/tools/vault/go.sum" "$root/tools/vault/tools.go" "$tmp/"
(cd "$tmp" && go build -trimpath -ldflags="-s -w" -o "$tmp/vault" github.com/hashicorp/vault) >&2
mv "$tmp/vault" "$cache/vault"
echo "$cache"
