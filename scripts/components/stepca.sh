#!/usr/bin/env bash
# Builds step-ca and the step CLI (smallstep, the upstream-CA tests' step-ca) from the Go module proxy, once,
# into $KITH_TEST_CACHE/stepca-<version>/ (default $HOME/.cache/kith-test), and prints that directory. The
# versions are pinned by tools/stepca/go.mod. A cold build takes minutes on 2 cores; a warm cache returns at once.
set -euo pipefail
STEP_VERSION=v0.30.2
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${KITH_TEST_CACHE:-$HOME/.cache/kith-test}/stepca-${STEP_VERSION}"
if [[ -x "$cache/step-ca" && -x "$cache/step" ]]; then
	echo "$cache"
	exit 0
fi
mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
if [[ ! -x "$cache/step-ca" ]]; then
	echo "building step-ca $STEP_VERSION (minutes cold; cached afterwards)..." >&2
	(cd "$root/tools/stepca" && go build -trimpath -ldflags="-s -w -X main.Version=$STEP_VERSION" \
		-o "$tmp/step-ca" github.com/smallstep/certificates/cmd/step-ca) >&2
	mv "$tmp/step-ca" "$cache/step-ca"
fi
if [[ ! -x "$cache/step" ]]; then
	echo "building step $STEP_VERSION (minutes cold; cached afterwards)..." >&2
	(cd "$root/tools/stepca" && go build -trimpath -ldflags="-s -w -X main.Version=$STEP_VERSION" \
		-o "$tmp/step" github.com/smallstep/cli/cmd/step) >&2
	mv "$tmp/step" "$cache/step"
fi
echo "$cache"
