#!/usr/bin/env bash
# Installs Chromium for the console's browser tests (build tag browser, `make test-browser`) from Debian's
# `chromium` package if it is missing, and prints the binary's path. The tests drive it headless with
# github.com/chromedp/chromedp. A cold install takes about 5 minutes; an installed one returns at once.
# KITH_CHROMIUM names a binary to use instead.
set -euo pipefail
if [[ -n "${KITH_CHROMIUM:-}" ]]; then
	[[ -x "$KITH_CHROMIUM" ]] || { echo "KITH_CHROMIUM=$KITH_CHROMIUM is not an executable file" >&2; exit 1; }
	echo "$KITH_CHROMIUM"
	exit 0
fi
find_chromium() {
	local c
	for c in chromium chromium-browser; do
		if command -v "$c" >/dev/null 2>&1; then
			command -v "$c"
			return 0
		fi
	done
	return 1
}
if find_chromium; then
	exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "chromium is not installed and there is no apt-get: install Chromium and set KITH_CHROMIUM to its binary" >&2
	exit 1
fi
sudo=""
if [[ "$(id -u)" != 0 ]]; then
	command -v sudo >/dev/null 2>&1 || { echo "installing chromium needs root: run apt-get install -y chromium as root, or set KITH_CHROMIUM" >&2; exit 1; }
	sudo="sudo"
fi
echo "installing Debian's chromium package (about 5 minutes cold)..." >&2
$sudo apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >&2
find_chromium || { echo "apt-get installed chromium but no chromium binary is on PATH" >&2; exit 1; }
