#!/usr/bin/env bash
# make bench: every performance figure recorded in docs/benchmarks.md, measured on this machine.
#
#   ./bench/run.sh                 all of them (about 2 minutes)
#   ./bench/run.sh mint fetch      only some: ca mint propagation fetch scale sds authz grant policy k8s meshimport ha admin federation console
#
# k8s needs kube-apiserver and etcd: it builds them first with scripts/components/kube.sh (cached; tens of
# minutes cold). ha needs PostgreSQL: scripts/components/postgres.sh installs it (apt-get) when missing.
# console needs Chromium: scripts/components/chromium.sh installs Debian's package if missing.
#
# The load programs (bench/<name>/) start Kith themselves (in-process or as bin/kith child processes on a
# temp dir), listen on loopback and unix sockets only, and stop by themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
ALL=(ca mint propagation fetch scale sds authz grant policy k8s meshimport ha admin federation console)
if [ $# -gt 0 ]; then ITEMS=("$@"); else ITEMS=("${ALL[@]}"); fi
for item in "${ITEMS[@]}"; do
	case " ${ALL[*]} " in *" $item "*) ;; *) echo "unknown benchmark $item; choose from: ${ALL[*]}" >&2; exit 2 ;; esac
done

OUT=$(mktemp -d /tmp/kith-bench-bin.XXXXXX)
trap 'rm -rf "$OUT"' EXIT

header() { printf '\n== %s  (%s; load average %s)\n' "$1" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(cut -d' ' -f1-3 /proc/loadavg)"; }

echo "kith benchmarks: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $($GO version | cut -d' ' -f3)"

needs_kith=0
for item in "${ITEMS[@]}"; do case $item in propagation | fetch | scale | sds | grant | policy | k8s | ha | federation | console) needs_kith=1 ;; esac; done
if [ "$needs_kith" = 1 ]; then
	make --no-print-directory build >/dev/null
fi
for item in "${ITEMS[@]}"; do
	case $item in ca | authz | k8s | admin) ;; *) $GO build -o "$OUT/$item" "./bench/$item" ;; esac
done

for item in "${ITEMS[@]}"; do
	case $item in
	ca)
		header "1. CA signing: go test ./ca -run '^\$' -bench SignX509SVID -benchtime 2s -count 3"
		$GO test ./ca -run '^$' -bench SignX509SVID -benchtime 2s -count 3 | tee "$OUT/ca.txt" | grep '^Benchmark'
		awk '/^BenchmarkSignX509SVIDReference/ { r += $3; nr++; next }
		     /^BenchmarkSignX509SVID-/ { k += $3; nk++ }
		     END { if (nr == 0 || nk == 0) { print "ca: no benchmark output"; exit 1 }
		           printf "ca: Kith %.1f µs/op (%.0f SVIDs/s/core), stdlib reference %.1f µs/op: Kith runs at %.0f %% of the reference (target ≥ 80 %%)\n",
		                  k/nk/1000, 1e9/(k/nk), r/nr/1000, 100*(r/nr)/(k/nk) }' "$OUT/ca.txt"
		;;
	mint)
		header "2. Minting through the admin API: bench/mint -callers 8 -duration 10s"
		"$OUT/mint" -callers 8 -duration 10s
		header "2b. Minting with an upstream authority configured vs without (same run): bench/mint -compare-upstream -rounds 3 -duration 5s"
		"$OUT/mint" -compare-upstream -rounds 3 -duration 5s
		;;
	propagation)
		header "3. Entry created → SVID in the workload: bench/propagation -trials 200"
		"$OUT/propagation" -kith bin/kith -trials 200
		;;
	federation)
		header "15. Federation: bundle endpoint requests/s, CA change → federated server: bench/federation -clients 8 -duration 5s -trials 5"
		"$OUT/federation" -kith bin/kith -clients 8 -duration 5s -trials 5
		;;
	fetch)
		header "4. Workload API fetch on a fresh connection: bench/fetch -calls 1000"
		"$OUT/fetch" -kith bin/kith -calls 1000
		;;
	scale)
		header "5. 10,000 entries on one agent: bench/scale -entries 10000 (in-process; processes polling; processes with an open stream)"
		"$OUT/scale" -inprocess -entries 10000
		"$OUT/scale" -kith bin/kith -entries 10000 -watch=false
		"$OUT/scale" -kith bin/kith -entries 10000 -watch=true
		;;
	sds)
		header "6. 10,000 SDS streams on one agent: bench/sds -conns 100 -streams 100"
		"$OUT/sds" -kith bin/kith -conns 100 -streams 100
		;;
	authz)
		header "7. Authorization engine (100,000 grants) and ext_authz Check: go test ./authz ./authz/extauthz -bench"
		$GO test ./authz -run '^$' -bench Decide100k -benchtime 100000x -count 2 | grep -E '^Benchmark|p50|p99'
		$GO test ./authz/extauthz -run '^$' -bench 'CheckUnixSocket' -count 2 | grep -E '^Benchmark|p50|p99|checks'
		;;
	meshimport)
		header "12. Mesh policies: 100,000 grants with 10 % path expressions; kith import smi of 10,000 TrafficTargets: bench/meshimport"
		$GO test ./authz -run '^$' -bench 'Decide100kGrants(10PercentRegex)?$' -benchtime 100000x -count 2 | grep -E '^Benchmark'
		"$OUT/meshimport" -targets 10000
		;;
	grant)
		header "7. kith grant returns → the agent enforces it: bench/grant -trials 200"
		"$OUT/grant" -kith bin/kith -trials 200
		;;
	policy)
		header "8. Policy commit + webhook → every agent enforces it: bench/policy -commits 20 -modules 200 -agents 3"
		"$OUT/policy" -kith bin/kith -commits 20 -modules 200 -agents 3
		;;
	ha)
		bin=$(./scripts/components/postgres.sh)
		header "13. Several servers on one PostgreSQL: bench/ha -trials 200 -kills 20 -batch 10000 -mint 10s"
		KITH_POSTGRES_BIN="$bin" "$OUT/ha" -kith bin/kith -trials 200 -kills 20 -batch 10000 -mint 10s
		;;
	admin)
		header "14. Admin API over mTLS: what the kith.admin policy adds per call: go test ./internal/server/adminapi -bench Authorize"
		$GO test ./internal/server/adminapi -run '^$' -bench Authorize -benchtime 20000x -count 3 | grep -E '^Benchmark'
		$GO test ./authz -run '^$' -bench AdminDecide -benchtime 10000x -count 2 | grep -E '^Benchmark'
		;;
	k8s)
		assets=$(./scripts/components/kube.sh)
		header "11. Kubernetes, pod created → entry → SVID in the pod; 5,000-pod burst: KITH_BIN=bin/kith go test -tags k8s ./bench/k8s -run '^\$' -bench . -benchtime 1x -v"
		KITH_BIN="$PWD/bin/kith" KUBEBUILDER_ASSETS="$assets" $GO test -tags k8s ./bench/k8s -run '^$' -bench . -benchtime 1x -timeout 20m -v |
			grep -E '^Benchmark|(k8s|svid)_test.go|^(ok|FAIL|PASS)'
		;;
	console)
		chromium=$(./scripts/components/chromium.sh)
		header "16. Web console: access graph with 500 identities and 5,000 grants in headless Chromium; 50 open consoles: bench/console"
		"$OUT/console" -kith bin/kith -chromium "$chromium" -identities 500 -grants 5000 -consoles 50
		;;
	esac
done
