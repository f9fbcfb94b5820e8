#!/usr/bin/env bash
# make demo: start a Kith server on a temporary data dir, then use the CLI as an operator would.
set -euo pipefail
cd "$(dirname "$0")/.."
KITH=${KITH:-$PWD/bin/kith}
DIR=$(mktemp -d /tmp/kith-demo.XXXXXX)
export KITH_ADMIN_SOCKET=$DIR/admin.sock
LOG=$DIR/server.log
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$DIR"; }
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "start kith server (data dir $DIR)"
KITH_LISTEN_GRPC=127.0.0.1:0 KITH_LISTEN_HTTP=127.0.0.1:0 "$KITH" server --data-dir "$DIR/data" --trust-domain example.org >"$LOG" 2>&1 &
PID=$!
export KITH_ADMIN_SOCKET=$DIR/data/admin.sock
for _ in $(seq 100); do [ -S "$KITH_ADMIN_SOCKET" ] && break; sleep 0.1; done
[ -S "$KITH_ADMIN_SOCKET" ] || { cat "$LOG"; echo "server did not start" >&2; exit 1; }
head -n 3 "$LOG"

step "the CA"
run "$KITH" ca show

step "a join token for node1 and an entry for a workload on it"
run "$KITH" token create --name node1 --ttl 10m
run "$KITH" entry create --spiffe-id spiffe://example.org/ns/prod/sa/payments \
  --node-selector join_token:name:node1 --selector unix:uid:1000 --label team=payments
run "$KITH" entry list

step "mint an X.509-SVID (the key is made by the CLI and never leaves it)"
run "$KITH" svid mint x509 --spiffe-id spiffe://example.org/ns/prod/sa/payments --ttl 30m \
  --out-cert "$DIR/svid.pem" --out-key "$DIR/svid.key"
openssl x509 -in "$DIR/svid.pem" -noout -subject -issuer -ext subjectAltName,keyUsage,extendedKeyUsage -dates

step "mint a JWT-SVID"
TOKEN=$("$KITH" svid mint jwt --spiffe-id spiffe://example.org/ns/prod/sa/payments --audience spiffe://example.org/ns/prod/sa/orders)
echo "$TOKEN"
echo "claims: $(echo "$TOKEN" | cut -d. -f2 | tr '_-' '/+' | base64 -d 2>/dev/null || true)"

step "verify both against the trust bundle"
run "$KITH" bundle show --format pem > "$DIR/roots.pem"
"$KITH" bundle show --format spiffe > "$DIR/bundle.json"
run "$KITH" svid verify --cert "$DIR/svid.pem" --bundle "$DIR/bundle.json"
run "$KITH" svid verify --jwt "$TOKEN" --audience spiffe://example.org/ns/prod/sa/orders --bundle "$DIR/bundle.json"
printf '$ openssl verify -CAfile roots.pem -untrusted <intermediate> <leaf>\n'
awk '/BEGIN/{n++} {print > "'"$DIR"'/cert" n ".pem"}' "$DIR/svid.pem"
openssl verify -CAfile "$DIR/roots.pem" -untrusted "$DIR/cert2.pem" "$DIR/cert1.pem"

step "the audit log is hash-chained"
run "$KITH" audit list
run "$KITH" audit verify
