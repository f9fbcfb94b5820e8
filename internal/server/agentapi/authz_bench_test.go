package agentapi

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/internal/store"
	"github.com/kithid/kith/internal/store/sqlite"
)

// authzFixture is a store with many agents, entries, grants, modes and labels, and the entries each agent
// serves.
type authzFixture struct {
	st     *sqlite.Store
	agents []spiffeid.ID
	served []map[string]string // per agent: entry ID → SPIFFE ID
}

// newAuthzFixture fills a SQLite store: agents × perAgent entries (every third with labels), grants
// spread over served IDs, unserved IDs and "/*" prefixes, and a few targets in audit mode.
func newAuthzFixture(tb testing.TB, agents, perAgent, grants int) *authzFixture {
	tb.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(tb.TempDir(), "kith.db")})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	td := spiffeid.RequireTrustDomainFromString("example.org")
	f := &authzFixture{st: st}
	var entries []store.Entry
	for a := range agents {
		f.agents = append(f.agents, spiffeid.RequireFromPath(td, fmt.Sprintf("/kith/agent/join_token/a%d", a)))
		for e := range perAgent {
			en := store.Entry{
				SPIFFEID:  spiffeid.RequireFromPath(td, fmt.Sprintf("/ns/ns%d/sa/svc-%d-%d", a%10, a, e)),
				ParentID:  f.agents[a],
				Selectors: []attestation.Selector{{Type: "unix", Key: "uid", Value: fmt.Sprint(1000 + e)}},
			}
			if e%3 == 0 {
				en.Labels = map[string]string{"env": []string{"prod", "dev"}[a%2], "team": fmt.Sprintf("t%d", e)}
			}
			entries = append(entries, en)
		}
	}
	created, err := st.CreateEntries(ctx, "bench", entries)
	if err != nil {
		tb.Fatal(err)
	}
	f.served = make([]map[string]string, agents)
	for i, e := range created {
		a := i / perAgent
		if f.served[a] == nil {
			f.served[a] = map[string]string{}
		}
		f.served[a][e.ID] = e.SPIFFEID.String()
	}
	gs := make([]authz.Grant, 0, grants)
	for i := range grants {
		var target string
		switch {
		case i%50 == 0: // a prefix
			target = fmt.Sprintf("spiffe://example.org/ns/ns%d/*", i%20)
		case i%10 == 1: // an ID no agent serves
			target = fmt.Sprintf("spiffe://example.org/ns/other/sa/svc-%d", i%500)
		default:
			a := i % agents
			target = fmt.Sprintf("spiffe://example.org/ns/ns%d/sa/svc-%d-%d", a%10, a, (i/agents)%perAgent)
		}
		g := authz.Grant{ID: fmt.Sprintf("g-%06d", i), Caller: fmt.Sprintf("spiffe://example.org/ns/callers/sa/c%d", i%997),
			Target: target, Source: "git:bench", CreatedBy: "bench"}
		if i%4 == 0 {
			g.Methods = []string{"GET", "POST"}
			g.Paths = []string{"/api/*"}
		}
		gs = append(gs, g)
	}
	if err := st.ReplaceGrantsFromSource(ctx, "bench", "git:", "git:bench", gs); err != nil {
		tb.Fatal(err)
	}
	for a := 0; a < agents; a += 7 {
		if err := st.SetTargetMode(ctx, "bench", fmt.Sprintf("spiffe://example.org/ns/ns%d/sa/svc-%d-0", a%10, a), authz.ModeAudit); err != nil {
			tb.Fatal(err)
		}
	}
	return f
}

// syncers returns one Sync stream's state per agent, each holding the entries its agent serves.
func (f *authzFixture) syncers(s *Service) []*syncer {
	out := make([]*syncer, len(f.agents))
	for i, id := range f.agents {
		out[i] = &syncer{s: s, agent: store.Agent{ID: id}, sent: maps.Clone(f.served[i])}
	}
	return out
}

// BenchmarkGrantChange100Agents is the cost of pushing one grant change to 100 agents' Sync streams with
// 100,000 grants in the store: each stream works out its authorization data and whether it changed.
func BenchmarkGrantChange100Agents(b *testing.B) {
	ctx := context.Background()
	f := newAuthzFixture(b, 100, 10, 100_000)
	s := &Service{cfg: Config{Authz: benchAuthzSource(b, f.st)}}
	streams := f.syncers(s)
	for _, sy := range streams {
		if err := sy.addAuthz(ctx, &agentv1.SyncResponse{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		a := i % len(f.agents)
		if _, err := f.st.CreateGrant(ctx, "bench", authz.Grant{
			Caller: "spiffe://example.org/ns/callers/sa/new",
			Target: fmt.Sprintf("spiffe://example.org/ns/ns%d/sa/svc-%d-1", a%10, a),
		}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		sent := 0
		for _, sy := range streams {
			msg := &agentv1.SyncResponse{}
			if err := sy.addAuthz(ctx, msg); err != nil {
				b.Fatal(err)
			}
			if msg.Authz != nil {
				sent++
			}
		}
		if sent != 1 {
			b.Fatalf("%d streams sent authorization data, want 1", sent)
		}
	}
}
