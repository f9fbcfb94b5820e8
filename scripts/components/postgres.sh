#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries (initdb, pg_ctl, postgres) are on this machine and prints their
# directory: the tests tagged postgres start throwaway clusters from it (internal/store/postgres/pgtest), as
# KITH_POSTGRES_BIN. PostgreSQL comes from the distribution (Debian: `apt-get install -y postgresql`, ~15 s
# warm, ~1–2 min cold); a directory already installed is reused, and KITH_POSTGRES_BIN set beforehand wins.
set -euo pipefail
find_bin() {
	if [[ -n "${KITH_POSTGRES_BIN:-}" && -x "$KITH_POSTGRES_BIN/initdb" ]]; then
		echo "$KITH_POSTGRES_BIN"
		return 0
	fi
	local d
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
		if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then
			echo "$d"
			return 0
		fi
	done
	return 1
}
if find_bin; then
	exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
	echo "postgres.sh: PostgreSQL is not installed and this is not root: run 'sudo apt-get install -y postgresql' (or set KITH_POSTGRES_BIN to a directory holding initdb and pg_ctl)" >&2
	exit 1
fi
echo "installing postgresql (apt-get; a minute or two cold)..." >&2
export DEBIAN_FRONTEND=noninteractive
{ apt-get update -qq && apt-get install -y -qq postgresql; } >&2
find_bin || { echo "postgres.sh: apt-get installed postgresql but no initdb was found under /usr/lib/postgresql/*/bin" >&2; exit 1; }
