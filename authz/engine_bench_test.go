package authz

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const (
	benchTargets = 1000
	benchCallers = 100
)

func benchTarget(i int) spiffeid.ID {
	return spiffeid.RequireFromPath(td, fmt.Sprintf("/ns/ns%d/sa/svc%d", i%10, i))
}

func benchCaller(j int) spiffeid.ID {
	return spiffeid.RequireFromPath(td, fmt.Sprintf("/ns/clients/sa/caller%d", j))
}

// benchEngine has 100,000 exact grants (1,000 targets × 100 callers) plus
// prefix grants on callers and targets.
func benchEngine(b *testing.B) *Engine { return benchEngineRegex(b, 0) }

// benchEngineRegex is benchEngine with every regexEvery-th exact grant (0: none) a path expression and a
// header match instead of its path patterns, each with an expression of its own (as SMI imports give).
func benchEngineRegex(b *testing.B, regexEvery int) *Engine {
	b.Helper()
	e := newEngine(b, Config{})
	grants := make([]Grant, 0, benchTargets*benchCallers+200)
	for i := range benchTargets {
		for j := range benchCallers {
			g := Grant{
				ID: fmt.Sprintf("g-%d-%d", i, j), Caller: benchCaller(j).String(), Target: benchTarget(i).String(),
				Methods: []string{"GET", "POST"}, Paths: []string{"/api/*", "/pkg.Service/*"},
				ExpiresAt: t0.Add(24 * time.Hour),
			}
			if regexEvery > 0 && (i*benchCallers+j)%regexEvery == 0 {
				g.Paths = nil
				g.PathRegex = []string{fmt.Sprintf("/api/v[0-9]+/t%d/c%d", i, j), "/pkg\\.Service/"}
				g.Headers = map[string]string{"user-agent": fmt.Sprintf(".*client-%d.*", j)}
			}
			grants = append(grants, g)
		}
	}
	for k := range 100 {
		grants = append(grants,
			Grant{ID: fmt.Sprintf("p-caller-%d", k), Caller: fmt.Sprintf("spiffe://example.org/ns/team%d/*", k), Target: benchTarget(k * 7).String(), Methods: []string{"GET"}},
			Grant{ID: fmt.Sprintf("p-target-%d", k), Caller: benchCaller(k).String(), Target: fmt.Sprintf("spiffe://example.org/ns/ns%d/*", k%10), Paths: []string{"/healthz"}},
		)
	}
	if err := e.SetData(context.Background(), Data{Grants: grants}); err != nil {
		b.Fatalf("SetData: %v", err)
	}
	return e
}

func BenchmarkDecide100kGrants(b *testing.B) {
	e := benchEngine(b)
	ctx := context.Background()
	cases := []struct {
		name  string
		in    Input
		allow bool
	}{
		{"matching", Input{Caller: benchCaller(42), Target: benchTarget(500), Method: "GET", Path: "/api/v1/users"}, true},
		{"matching by prefix", Input{Caller: spiffeid.RequireFromPath(td, "/ns/team3/sa/x"), Target: benchTarget(21), Method: "GET", Path: "/"}, true},
		{"non-matching method", Input{Caller: benchCaller(42), Target: benchTarget(500), Method: "DELETE", Path: "/admin"}, false},
		{"non-matching caller", Input{Caller: spiffeid.RequireFromPath(td, "/ns/other/sa/x"), Target: benchTarget(500), Method: "GET", Path: "/api/v1"}, false},
		{"with envoy attributes", withAttributes(Input{Caller: benchCaller(42), Target: benchTarget(500), Method: "GET", Path: "/api/v1/users"}), true},
	}
	for _, c := range cases {
		if d := decide(b, e, c.in); d.Allowed != c.allow {
			b.Fatalf("%s: Allowed = %v, want %v: %v", c.name, d.Allowed, c.allow, d.Reasons)
		}
		b.Run(c.name, func(b *testing.B) {
			durations := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			for b.Loop() {
				start := time.Now()
				if _, err := e.Decide(ctx, c.in); err != nil {
					b.Fatal(err)
				}
				durations = append(durations, time.Since(start))
			}
			reportPercentiles(b, durations)
		})
	}
}

// BenchmarkDecide100kGrants10PercentRegex is BenchmarkDecide100kGrants with 10,000 of the grants path
// expressions with a header match, each its own: the engine's cost must not grow with them.
func BenchmarkDecide100kGrants10PercentRegex(b *testing.B) {
	e := benchEngineRegex(b, 10)
	ctx := context.Background()
	ua := map[string]string{"user-agent": "Mozilla client-40 x"}
	cases := []struct {
		name  string
		in    Input
		allow bool
	}{
		{"matching a path expression", Input{Caller: benchCaller(40), Target: benchTarget(500), Method: "GET", Path: "/api/v2/t500/c40/users", Headers: ua}, true},
		{"path expression not matching", Input{Caller: benchCaller(40), Target: benchTarget(500), Method: "GET", Path: "/api/v2/t501/c40", Headers: ua}, false},
		{"matching a pattern beside them", Input{Caller: benchCaller(42), Target: benchTarget(500), Method: "GET", Path: "/api/v1/users"}, true},
	}
	for _, c := range cases {
		if d := decide(b, e, c.in); d.Allowed != c.allow {
			b.Fatalf("%s: Allowed = %v, want %v: %v", c.name, d.Allowed, c.allow, d.Reasons)
		}
		b.Run(c.name, func(b *testing.B) {
			durations := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			for b.Loop() {
				start := time.Now()
				if _, err := e.Decide(ctx, c.in); err != nil {
					b.Fatal(err)
				}
				durations = append(durations, time.Since(start))
			}
			reportPercentiles(b, durations)
		})
	}
}

// BenchmarkDecide100kGrantsParallel measures decisions from all CPUs at once.
func BenchmarkDecide100kGrantsParallel(b *testing.B) {
	e := benchEngine(b)
	ctx := context.Background()
	in := Input{Caller: benchCaller(42), Target: benchTarget(500), Method: "GET", Path: "/api/v1/users"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := e.Decide(ctx, in); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func reportPercentiles(b *testing.B, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	at := func(p float64) float64 { return float64(d[min(len(d)-1, int(float64(len(d))*p))].Nanoseconds()) }
	b.ReportMetric(at(0.50), "p50-ns")
	b.ReportMetric(at(0.99), "p99-ns")
}

// withAttributes adds an Envoy CheckRequest.attributes document of typical size.
func withAttributes(in Input) Input {
	in.Attributes = map[string]any{
		"source":      map[string]any{"address": map[string]any{"socketAddress": map[string]any{"address": "10.0.0.7", "portValue": 51234}}, "principal": in.Caller.String()},
		"destination": map[string]any{"address": map[string]any{"socketAddress": map[string]any{"address": "10.0.0.9", "portValue": 8443}}, "principal": in.Target.String()},
		"request": map[string]any{"time": "2026-03-01T12:00:00Z", "http": map[string]any{
			"id": "1234567890", "method": in.Method, "path": in.Path, "host": "svc", "scheme": "https", "protocol": "HTTP/2",
			"headers": map[string]any{
				":authority": "svc", ":method": in.Method, ":path": in.Path, ":scheme": "https",
				"accept": "*/*", "user-agent": "curl/8.5.0", "x-request-id": "5a7c3f2e-9c1d-4b0e-8f3a-2d6e1b9c0a4f",
				"x-forwarded-proto": "https", "content-type": "application/json",
			},
		}},
	}
	return in
}
