// Command meshimport measures `kith import smi` of 10,000 TrafficTargets (each with its HTTPRouteGroup of
// two routes and a TCPRoute) as the server does it: read the YAML, convert, and write the grants in one
// store transaction (SQLite in a temp dir), then the same import again (nothing changes). It prints the
// time of each step and the process's peak RSS.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/authz/meshimport"
	"github.com/kithid/kith/authz/meshimport/smi"
	"github.com/kithid/kith/internal/store"
	"github.com/kithid/kith/internal/store/sqlite"
)

func main() {
	n := flag.Int("targets", 10000, "TrafficTargets")
	flag.Parse()
	ctx := context.Background()
	var b bytes.Buffer
	for i := range *n {
		fmt.Fprintf(&b, `---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: routes-%[1]d, namespace: ns%[2]d}
spec:
  matches:
  - {name: api, pathRegex: "/api/v[0-9]+/", methods: [GET, POST]}
  - {name: metrics, pathRegex: /metrics, methods: [GET]}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: port-%[1]d, namespace: ns%[2]d}
spec: {matches: {ports: [8080]}}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: tt-%[1]d, namespace: ns%[2]d}
spec:
  destination: {kind: ServiceAccount, name: svc-%[1]d}
  rules:
  - {kind: TCPRoute, name: port-%[1]d}
  - {kind: HTTPRouteGroup, name: routes-%[1]d}
  sources: [{kind: ServiceAccount, name: client-%[1]d}, {kind: ServiceAccount, name: prometheus, namespace: monitoring}]
`, i, i%100)
	}
	dir, err := os.MkdirTemp("", "kith-bench-meshimport")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	st, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(dir, "kith.db")})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	td := spiffeid.RequireTrustDomainFromString("example.org")

	run := func(label string) {
		t0 := time.Now()
		objs, err := meshimport.Read("bench.yaml", b.Bytes())
		if err != nil {
			log.Fatal(err)
		}
		t1 := time.Now()
		p, err := smi.Parse(objs)
		if err != nil {
			log.Fatal(err)
		}
		res, err := smi.Convert(p, meshimport.Options{TrustDomain: td})
		if err != nil {
			log.Fatal(err)
		}
		t2 := time.Now()
		if err := st.ReplaceGrantsFromSource(ctx, "bench", "smi:", "smi:", res.Grants); err != nil {
			log.Fatal(err)
		}
		t3 := time.Now()
		gs, err := st.ListGrants(ctx, store.GrantFilter{})
		if err != nil {
			log.Fatal(err)
		}
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		fmt.Printf("%s: %d TrafficTargets (%.1f MB of YAML) → %d grants: read %.2fs, convert %.2fs, one transaction %.2fs, total %.2fs; %d grants stored; peak RSS %d MB\n",
			label, *n, float64(b.Len())/1e6, len(res.Grants), t1.Sub(t0).Seconds(), t2.Sub(t1).Seconds(), t3.Sub(t2).Seconds(), t3.Sub(t0).Seconds(), len(gs), ru.Maxrss/1024)
	}
	run("first import")
	run("same import again")
}
