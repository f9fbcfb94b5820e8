#!/usr/bin/env bash
# Builds SPIRE's spire-server (what the tests run; its agent is not needed) from the Go module proxy, once, into
# $KITH_TEST_CACHE/spire-<version>/ (default $HOME/.cache/kith-test), and prints that directory: the federation
# interop tests (build tag federation) run that spire-server against Kith. SPIRE is a test-only tool; its module
# (tools/spire) stays out of the project's go.mod. SPIRE's SQL datastore uses github.com/mattn/go-sqlite3, which
# needs cgo: the build runs with CGO_ENABLED=1 and a C compiler (gcc). A cold build takes several minutes on
# 2 cores; a warm cache returns at once.
set -euo pipefail
SPIRE_VERSION=v1.13.3
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${KITH_TEST_CACHE:-$HOME/.cache/kith-test}/spire-${SPIRE_VERSION}"
if [[ -x "$cache/spire-server" ]]; then
	echo "$cache"
	exit 0
fi
if ! command -v "${CC:-gcc}" >/dev/null; then
	echo "spire.sh: SPIRE's sqlite datastore needs cgo and a C compiler; install one (apt-get install -y gcc)" >&2
	exit 1
fi
mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
export CGO_ENABLED=1 GOFLAGS=-buildvcs=false
for bin in spire-server; do
	if [[ ! -x "$cache/$bin" ]]; then
		echo "building $bin $SPIRE_VERSION (minutes cold; cached afterwards)..." >&2
		(cd "$root/tools/spire" && go build -trimpath -ldflags="-s -w" -o "$tmp/$bin" \
			"github.com/spiffe/spire/cmd/$bin") >&2
		mv "$tmp/$bin" "$cache/$bin"
	fi
done
echo "$cache"
