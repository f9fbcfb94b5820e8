package extauthz_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/extauthz"
)

// benchEngine returns an engine with 1,000 grants: 999 for other callers
// and one that allows the benchmark's request.
func benchEngine(b *testing.B) *authz.Engine {
	b.Helper()
	e, err := authz.New(authz.Config{Logger: discard()})
	if err != nil {
		b.Fatal(err)
	}
	grants := make([]authz.Grant, 0, 1000)
	for i := range 999 {
		grants = append(grants, authz.Grant{
			ID:      fmt.Sprintf("g-%d", i),
			Caller:  fmt.Sprintf("spiffe://example.org/ns/prod/sa/caller-%d", i),
			Target:  fmt.Sprintf("spiffe://example.org/ns/prod/sa/svc-%d", i%50),
			Methods: []string{"GET", "POST"},
			Paths:   []string{"/api/*"},
		})
	}
	grants = append(grants, authz.Grant{ID: "g-frontend", Caller: frontend.String(), Target: payments.String(), Methods: []string{"GET"}, Paths: []string{"/api/*"}})
	if err := e.SetData(context.Background(), authz.Data{Grants: grants}); err != nil {
		b.Fatal(err)
	}
	return e
}

// withoutAttributes is the engine telling the server that the built-in
// policy does not read input.attributes.
type withoutAttributes struct{ *authz.Engine }

func (withoutAttributes) NeedsAttributes() bool { return false }

func benchDeciders(b *testing.B) map[string]extauthz.Decider {
	e := benchEngine(b)
	return map[string]extauthz.Decider{"attributes": e, "no attributes": withoutAttributes{e}}
}

func benchRequest() *authv3.CheckRequest {
	return request{caller: frontend.String(), target: payments.String(), method: "GET", path: "/api/v1/users?limit=10",
		headers: map[string]string{"user-agent": "curl/8.5", "accept": "*/*", "x-request-id": "5f0c2a"}}.proto()
}

// BenchmarkCheckUnixSocket measures one caller's check latency through
// gRPC over a unix socket, OPA evaluation included.
func BenchmarkCheckUnixSocket(b *testing.B) {
	for _, name := range []string{"attributes", "no attributes"} {
		b.Run(name, func(b *testing.B) {
			client := serve(b, "unix", extauthz.Config{Decider: benchDeciders(b)[name]})
			ctx, req := context.Background(), benchRequest()
			durations := make([]time.Duration, 0, b.N)
			for b.Loop() {
				start := time.Now()
				resp, err := client.Check(ctx, req)
				durations = append(durations, time.Since(start))
				if err != nil || resp.GetStatus().GetCode() != 0 {
					b.Fatalf("check: %v %v", resp, err)
				}
			}
			slices.Sort(durations)
			b.ReportMetric(float64(durations[len(durations)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(durations[len(durations)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// BenchmarkCheckUnixSocketParallel16 measures throughput with 16 callers
// sharing one connection, as Envoy's workers do.
func BenchmarkCheckUnixSocketParallel16(b *testing.B) {
	for _, name := range []string{"attributes", "no attributes"} {
		b.Run(name, func(b *testing.B) {
			client := serve(b, "unix", extauthz.Config{Decider: benchDeciders(b)[name]})
			ctx := context.Background()
			var failed atomic.Bool
			b.SetParallelism((16 + runtimeProcs() - 1) / runtimeProcs())
			start, cpu := time.Now(), cpuTime()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req := benchRequest()
				for pb.Next() {
					resp, err := client.Check(ctx, req)
					if err != nil || resp.GetStatus().GetCode() != 0 {
						failed.Store(true)
					}
				}
			})
			elapsed := time.Since(start)
			if failed.Load() {
				b.Fatal("a check failed or was denied")
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "checks/s")
			// CPU per check (client and server, both in this process) does
			// not depend on what else the machine runs.
			b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/float64(b.N), "cpu-µs/check")
		})
	}
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
