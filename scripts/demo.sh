#!/usr/bin/env bash
# make demo: start `kith dev` (server + agent in one process) on a temporary dir, mint and verify SVIDs
# with the CLI, then let real workloads get their identities from the agent: two greeters talk mTLS,
# a proxy-like program reads its secrets over SDS, and an unregistered program is refused. Then a payments
# service asks the agent about every request: grants let callers in, a revocation shuts them out. Last, a
# person: scott is added, logs in with his enrolment code, is refused what he does not own, and disabled.
# Needs no root; everything lives in one temp dir that is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
KITH=${KITH:-$PWD/bin/kith}
TD=kith.test
DIR=$(mktemp -d /tmp/kith-demo.XXXXXX)
# Workloads of any user must reach the agent socket in here; the agent attests each caller.
chmod 0755 "$DIR"
# The agent reads a workload's path from /proc/<pid>/exe, which resolves symlinks: register real paths.
DIR=$(realpath "$DIR")
PIDS=()
# People log in to the admin API over mTLS on this port (step 14).
ADMIN_PORT=${KITH_DEMO_ADMIN_PORT:-18443}

cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ] && [ -f "$DIR/dev.log" ]; then
    echo "--- kith dev log (last 30 lines) ---" >&2
    tail -n 30 "$DIR/dev.log" >&2
  fi
  rm -rf "$DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# run CMD...: show CMD (kith for $KITH, arguments with spaces or globs quoted), then run it.
run() {
  local shown=() a
  for a in "$@"; do
    [ "$a" = "$KITH" ] && a=kith
    [[ $a =~ [^A-Za-z0-9_./:=@,+-] ]] && a="'$a'"
    shown+=("$a")
  done
  printf '$ %s\n' "${shown[*]}"
  "$@"
}
die() { echo "demo: $*" >&2; exit 1; }
# wait_for SECONDS CMD...: retry CMD every 0.1 s.
wait_for() {
  local n=$(($1 * 10)); shift
  for _ in $(seq "$n"); do "$@" && return 0; sleep 0.1; done
  return 1
}

DEV_ARGS=()
if [ "${KITH_DEMO_UPSTREAM:-}" = step ]; then
  step "0. a step-ca as the upstream CA (make demo UPSTREAM=step): Kith's intermediate is signed by it"
  STEPBIN=$(./scripts/components/stepca.sh)
  export STEPPATH=$DIR/step
  STEP_PORT=${KITH_DEMO_STEP_PORT:-19000}
  printf 'demo-step-password\n' >"$DIR/step-password"
  chmod 0600 "$DIR/step-password"
  run "$STEPBIN/step" ca init --deployment-type=standalone --name=Demo --dns=127.0.0.1 --address=127.0.0.1:$STEP_PORT \
    --provisioner=kith --password-file="$DIR/step-password" --provisioner-password-file="$DIR/step-password" >"$DIR/step-init.log" 2>&1
  # step-ca's own intermediate has pathlen 0 and cannot sign Kith's: sign with the root; and let the
  # provisioner make CA certificates from the CSR's subject, for up to 90 days.
  sed -i -e "s#$STEPPATH/certs/intermediate_ca.crt#$STEPPATH/certs/root_ca.crt#" -e "s#$STEPPATH/secrets/intermediate_ca_key#$STEPPATH/secrets/root_ca_key#" "$STEPPATH/config/ca.json"
  cat >"$DIR/kith-ca.tpl" <<'TPL'
{"subject": {{ toJson .Insecure.CR.Subject }}, "sans": {{ toJson .SANs }}, "keyUsage": ["certSign", "crlSign"], "basicConstraints": {"isCA": true, "maxPathLen": 0}}
TPL
  run "$STEPBIN/step" ca provisioner update kith --x509-template="$DIR/kith-ca.tpl" --x509-max-dur=2160h --x509-default-dur=168h \
    --ca-config="$STEPPATH/config/ca.json" >>"$DIR/step-init.log" 2>&1
  "$STEPBIN/step-ca" --password-file="$DIR/step-password" "$STEPPATH/config/ca.json" >"$DIR/step-ca.log" 2>&1 &
  PIDS+=("$!")
  step_up() { "$STEPBIN/step" ca health --ca-url "https://127.0.0.1:$STEP_PORT" --root "$STEPPATH/certs/root_ca.crt" >/dev/null 2>&1; }
  wait_for 20 step_up || { tail -n 20 "$DIR/step-ca.log" >&2; die "step-ca did not start within 20 s"; }
  cat >"$DIR/server.yaml" <<YAML
ca:
  upstream:
    step:
      url: https://127.0.0.1:$STEP_PORT
      root_file: $STEPPATH/certs/root_ca.crt
      provisioner: kith
      password_file: $DIR/step-password
YAML
  sed 's/^/    /' "$DIR/server.yaml"
  DEV_ARGS=(--server-config "$DIR/server.yaml")
elif [ "${KITH_DEMO_UPSTREAM:-}" = vault ]; then
  step "0. a Vault PKI secrets engine as the upstream CA (make demo UPSTREAM=vault): Kith's intermediate is signed by it"
  VAULTBIN=$(./scripts/components/vault.sh)
  VAULT_PORT=${KITH_DEMO_VAULT_PORT:-18200}
  export VAULT_ADDR=http://127.0.0.1:$VAULT_PORT
  # The dev server's root token: random, and given only to the set-up commands below (not to kith).
  VAULT_ROOT=$(openssl rand -hex 16)
  vault() { VAULT_TOKEN=$VAULT_ROOT "$VAULTBIN/vault" "$@"; }
  printf '$ vault server -dev -dev-listen-address=127.0.0.1:%s &   # in memory, for the demo\n' "$VAULT_PORT"
  # The binary itself in the background (not the function), so that cleanup stops Vault; its log holds
  # the root token: 0600.
  (umask 077 && exec "$VAULTBIN/vault" server -dev -dev-root-token-id="$VAULT_ROOT" -dev-listen-address="127.0.0.1:$VAULT_PORT" \
    -dev-no-store-token >"$DIR/vault.log" 2>&1) &
  PIDS+=("$!")
  vault_up() { vault status >/dev/null 2>&1; }
  wait_for 30 vault_up || { tail -n 20 "$DIR/vault.log" >&2; die "vault did not start within 30 s"; }
  run vault secrets enable -max-lease-ttl=8760h pki
  printf '$ vault write -field=certificate pki/root/generate/internal common_name="Demo Vault Root" key_type=ec ttl=8760h > vault-root.pem\n'
  vault write -field=certificate pki/root/generate/internal common_name="Demo Vault Root" key_type=ec ttl=8760h >"$DIR/vault-root.pem"
  # What Kith does with the mount: sign intermediates under its issuers, and read and list the issuers.
  cat >"$DIR/kith-policy.hcl" <<'HCL'
path "pki/root/sign-intermediate"     { capabilities = ["update"] }
path "pki/issuer/+/sign-intermediate" { capabilities = ["update"] }
path "pki/issuer/+"                   { capabilities = ["read"] }
path "pki/issuer/+/json"              { capabilities = ["read"] }
path "pki/issuers"                    { capabilities = ["list"] }
HCL
  sed 's/^/    /' "$DIR/kith-policy.hcl"
  run vault policy write kith "$DIR/kith-policy.hcl"
  printf '$ vault token create -policy=kith -period=1h -field=token > vault-token   # kith renews it\n'
  (umask 077 && vault token create -policy=kith -period=1h -field=token >"$DIR/vault-token")
  cat >"$DIR/server.yaml" <<YAML
ca:
  upstream:
    vault:
      address: $VAULT_ADDR
      mount: pki
      token_file: $DIR/vault-token
YAML
  sed 's/^/    /' "$DIR/server.yaml"
  DEV_ARGS=(--server-config "$DIR/server.yaml")
elif [ -n "${KITH_DEMO_UPSTREAM:-}" ]; then
  die "UPSTREAM=${KITH_DEMO_UPSTREAM}: use step or vault (or nothing, for Kith's own root)"
fi

step "1. start kith dev: a server and an agent in one process (data in $DIR/dev)"
printf '$ kith dev --data-dir %s --http 127.0.0.1:0 --admin-listen 127.0.0.1:%s %s &\n' "$DIR/dev" "$ADMIN_PORT" "${DEV_ARGS[*]:-}"
"$KITH" dev --data-dir "$DIR/dev" --http 127.0.0.1:0 --admin-listen "127.0.0.1:$ADMIN_PORT" "${DEV_ARGS[@]}" >"$DIR/dev.out" 2>"$DIR/dev.log" &
DEV_PID=$!
PIDS+=("$DEV_PID")
dev_up() { kill -0 "$DEV_PID" 2>/dev/null || die "kith dev exited"; grep -q "Press Ctrl-C" "$DIR/dev.out"; }
wait_for 20 dev_up || die "kith dev did not start within 20 s"
sed 's/^/    /' "$DIR/dev.out"
export KITH_ADMIN_SOCKET=$DIR/dev/admin.sock
export SPIFFE_ENDPOINT_SOCKET=unix://$DIR/dev/agent.sock
[ -S "$KITH_ADMIN_SOCKET" ] || die "no admin socket at $KITH_ADMIN_SOCKET"

step "2. the CA, and SVIDs minted with the CLI (the key is made by the CLI and never leaves it)"
run "$KITH" ca show
run "$KITH" svid mint x509 --spiffe-id spiffe://$TD/demo/cli --ttl 30m --out-cert "$DIR/svid.pem" --out-key "$DIR/svid.key"
openssl x509 -in "$DIR/svid.pem" -noout -ext subjectAltName | sed 's/^/    /'
printf '$ kith svid mint jwt --spiffe-id spiffe://%s/demo/cli --audience spiffe://%s/demo/api\n' "$TD" "$TD"
TOKEN=$("$KITH" svid mint jwt --spiffe-id spiffe://$TD/demo/cli --audience spiffe://$TD/demo/api)
echo "${TOKEN:0:60}...  claims: $(echo "$TOKEN" | cut -d. -f2 | tr '_-' '/+' | base64 -d 2>/dev/null || true)"

step "3. verify both against the trust bundle"
"$KITH" bundle show --format pem >"$DIR/roots.pem"
"$KITH" bundle show --format spiffe >"$DIR/bundle.json"
run "$KITH" svid verify --cert "$DIR/svid.pem" --bundle "$DIR/bundle.json"
printf '$ kith svid verify --jwt %s... --audience spiffe://%s/demo/api --bundle bundle.json\n' "${TOKEN:0:20}" "$TD"
"$KITH" svid verify --jwt "$TOKEN" --audience spiffe://$TD/demo/api --bundle "$DIR/bundle.json"
awk -v d="$DIR" '/BEGIN/{n++} {print > (d "/cert" n ".pem")}' "$DIR/svid.pem"
printf '$ openssl verify -CAfile roots.pem -untrusted intermediate.pem leaf.pem\n'
openssl verify -CAfile "$DIR/roots.pem" -untrusted "$DIR/cert2.pem" "$DIR/cert1.pem"
if [ "${KITH_DEMO_UPSTREAM:-}" = step ]; then
  printf '$ openssl verify -CAfile step/certs/root_ca.crt -untrusted intermediate.pem leaf.pem   # step-ca'"'"'s own root\n'
  openssl verify -CAfile "$STEPPATH/certs/root_ca.crt" -untrusted "$DIR/cert2.pem" "$DIR/cert1.pem"
elif [ "${KITH_DEMO_UPSTREAM:-}" = vault ]; then
  printf "$ openssl verify -CAfile vault-root.pem -untrusted intermediate.pem leaf.pem   # Vault's root\n"
  openssl verify -CAfile "$DIR/vault-root.pem" -untrusted "$DIR/cert2.pem" "$DIR/cert1.pem"
fi

step "4. build the example workloads"
# Same flags as `make build`, so the packages kith was built from come from the build cache.
CGO_ENABLED=0 run go build -trimpath -o "$DIR/bin/" ./examples/greeter-server ./examples/greeter-client ./examples/sds-fetch ./examples/intruder
ls "$DIR/bin" | sed 's/^/    /'

step "5. register them by their executables (selectors the agent derives from /proc/<pid>)"
CLIENT_SHA=$(sha256sum "$DIR/bin/greeter-client" | cut -d' ' -f1)
run "$KITH" entry create --spiffe-id spiffe://$TD/demo/greeter-server --selector "unix:path:$DIR/bin/greeter-server"
run "$KITH" entry create --spiffe-id spiffe://$TD/demo/greeter-client --selector "unix:sha256:$CLIENT_SHA" --selector "unix:uid:$(id -u)"
run "$KITH" entry create --spiffe-id spiffe://$TD/demo/proxy --selector "unix:path:$DIR/bin/sds-fetch"
echo "(no entry for $DIR/bin/intruder)"

step "6. mTLS between the greeters: each gets its SVID from the agent and names the other's SPIFFE ID"
printf '$ greeter-server --addr 127.0.0.1:0 --allow spiffe://%s/demo/greeter-client --once &\n' "$TD"
"$DIR/bin/greeter-server" --addr 127.0.0.1:0 --allow spiffe://$TD/demo/greeter-client --once >"$DIR/server.out" 2>&1 &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
wait_for 20 grep -q 'listening on' "$DIR/server.out" || { cat "$DIR/server.out"; die "greeter-server did not start"; }
ADDR=$(sed -n 's/.*listening on \([^,]*\),.*/\1/p' "$DIR/server.out")
cat "$DIR/server.out"
run "$DIR/bin/greeter-client" --addr "$ADDR" --server-id spiffe://$TD/demo/greeter-server
wait "$SERVER_PID" || die "greeter-server failed"
tail -n +2 "$DIR/server.out"

step "7. what a proxy (Envoy) receives over SDS on the same socket"
run "$DIR/bin/sds-fetch"

step "8. an unregistered program asks for an identity"
printf '$ %s\n' "$DIR/bin/intruder"
if "$DIR/bin/intruder"; then
  die "the unregistered program got an identity"
fi
echo "refused, as it should be: no entry matches its selectors"

step "9. the audit log is hash-chained"
run "$KITH" audit verify

step "10. authorization: a payments service asks the agent (ext_authz) about every request"
CGO_ENABLED=0 run go build -trimpath -o "$DIR/bin/" ./examples/payments ./examples/caller
# scott runs a copy of the same client from another path: a different executable, so a different workload.
mkdir -p "$DIR/scott"
cp "$DIR/bin/caller" "$DIR/scott/caller"
FRONTEND=$DIR/bin/caller
SCOTT=$DIR/scott/caller
run "$KITH" entry create --spiffe-id spiffe://$TD/payments --selector "unix:path:$DIR/bin/payments"
run "$KITH" entry create --spiffe-id spiffe://$TD/frontend --selector "unix:path:$FRONTEND"
run "$KITH" entry create --spiffe-id spiffe://$TD/user/scott --selector "unix:path:$SCOTT" --label env=dev
export KITH_AUTHZ_SOCKET=$DIR/dev/authz.sock
printf '$ KITH_AUTHZ_SOCKET=%s payments --addr 127.0.0.1:0 &\n' "$KITH_AUTHZ_SOCKET"
"$DIR/bin/payments" --addr 127.0.0.1:0 >"$DIR/payments.out" 2>&1 &
PAYMENTS_PID=$!
PIDS+=("$PAYMENTS_PID")
payments_up() { kill -0 "$PAYMENTS_PID" 2>/dev/null || { cat "$DIR/payments.out"; die "payments exited"; }; grep -q 'listening on' "$DIR/payments.out"; }
wait_for 20 payments_up || { cat "$DIR/payments.out"; die "payments did not start"; }
cat "$DIR/payments.out"
URL=https://$(sed -n 's/.*listening on \([^ ,]*\).*/\1/p' "$DIR/payments.out")/api/orders

# call NAME BINARY STATUS: call payments as NAME and expect STATUS; grants and revocations reach the agent
# within milliseconds, so retry for up to a second before giving up.
call() {
  local name=$1 bin=$2 want=$3 out
  printf '$ %s --url %s\n' "$name" "$URL"
  for _ in $(seq 10); do
    out=$("$bin" --url "$URL" --method GET) || die "$name failed: $out"
    case "$out" in *": $want "*) echo "$out"; return 0 ;; esac
    sleep 0.1
  done
  echo "$out"
  die "$name: expected $want"
}

step "11. frontend may GET /api/*; scott (a developer's tool, env=dev) may not"
run "$KITH" grant frontend payments --method GET --path '/api/*' --reason "checkout flow"
call frontend "$FRONTEND" 200
call scott "$SCOTT" 403
echo "(kith can exits 1 when denied, and says why)"
if run "$KITH" can scott payments --path /api/orders; then
  die "kith can allowed scott without a grant"
fi

step "12. a temporary grant for scott, then revoke it"
run "$KITH" grant scott payments --for 10m --reason "debugging an order"
call scott "$SCOTT" 200
run "$KITH" revoke scott payments
call scott "$SCOTT" 403
run "$KITH" who payments

step "13. scott, a person: added, logged in with his enrolment code, disabled"
out=$(run "$KITH" user add scott --label team=payments) || die "kith user add failed"
echo "$out"
LOGIN=$(echo "$out" | sed -n 's/^Log in: *kith //p')
[ -n "$LOGIN" ] || die "kith user add printed no login command"
# Scott's own terminal: his login lives in his config dir, and the CLI talks to the admin TCP listener.
scott_kith() { env -u KITH_ADMIN_SOCKET XDG_CONFIG_HOME="$DIR/scott-home" "$KITH" "$@"; }
printf '$ kith %s\n' "$LOGIN"
# shellcheck disable=SC2086 # the printed command's words
scott_kith $LOGIN || die "scott's login failed"
ls -l "$DIR/scott-home/kith"
printf '$ kith whoami   (as scott)\n'
scott_kith whoami || die "whoami failed"
printf '$ kith grant scott payments   (as scott: not an owner of payments)\n'
if scott_kith grant scott payments; then
  die "scott granted himself a call to payments he does not own"
fi
run "$KITH" grant scott payments --for 10m --reason "scott's first day"
call scott "$SCOTT" 200
run "$KITH" user disable scott
call scott "$SCOTT" 403
printf '$ kith whoami   (as scott, disabled)\n'
if scott_kith whoami; then
  die "a disabled user was answered"
fi

step "14. the audit log still verifies, with the grants, the revocation and scott's story in it"
run "$KITH" audit verify

CONSOLE=$(sed -n 's/^Console: *//p' "$DIR/dev.out")
step "14. the web console shows all of this: the access graph, identities, explain, agents, CA, policy, audit"
if [ -t 0 ] && [ -z "${KITH_DEMO_NO_WAIT:-}" ]; then
  echo "Open $CONSOLE in a browser on this machine. Press Enter to stop the demo."
  read -r _ || true
fi
step "done: stopping kith dev and removing $DIR"
echo "Console: $CONSOLE (it was served by this demo's kith dev; \`kith dev\` prints it each time it starts)"
