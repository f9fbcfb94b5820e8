// Package storetest is the conformance suite every store backend must pass: entries, join tokens, agents,
// grants, target modes, policy history, CA authorities, the audit hash chain, revisions, the change feed,
// Watch, concurrent writers and the error sentinels. It states the contract of package store precisely, and
// it only calls the store.Backend interface, so that a new backend (PostgreSQL) passes it unchanged:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T, now func() time.Time) store.Backend {
//			s, err := mybackend.Open(ctx, mybackend.Config{..., Now: now})
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
package storetest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/internal/store"
)

// Open returns a new, empty backend that reads the time from now, and closes it when t ends (t.Cleanup).
type Open func(t *testing.T, now func() time.Time) store.Backend

// AuditTamperer is implemented by a backend handed to Run (usually a test wrapper around the real one) that
// can alter its stored audit log behind its back, so that the suite can check that VerifyAudit notices. The
// suite skips the tamper checks for a backend without it.
type AuditTamperer interface {
	// AlterAuditDetail replaces the stored detail of row seq and leaves its hash as it was.
	AlterAuditDetail(t *testing.T, seq int64, detail string)
	// DeleteAuditRow removes row seq.
	DeleteAuditRow(t *testing.T, seq int64)
}

// Run runs the whole suite, each part on a fresh backend from open.
func Run(t *testing.T, open Open) {
	h := harness{open: open}
	for _, part := range []struct {
		name string
		run  func(*testing.T, harness)
	}{
		{"Entries", testEntries},
		{"CreateEntries", testCreateEntries},
		{"JoinTokens", testJoinTokens},
		{"TokenNameIsFreeAgainOnceItsAgentIsEvicted", testTokenNameReuse},
		{"RevokeJoinToken", testRevokeJoinToken},
		{"Agents", testAgents},
		{"BanAgent", testBanAgent},
		{"ListPaging", testListPaging},
		{"Grants", testGrants},
		{"ReplaceGrantsFromSource", testReplaceGrants},
		{"TargetModes", testTargetModes},
		{"Policies", testPolicies},
		{"AgentPolicies", testAgentPolicies},
		{"PolicyLabels", testPolicyLabels},
		{"Authorities", testAuthorities},
		{"Audit", testAudit},
		{"AuditTamper", testAuditTamper},
		{"ConcurrentAudits", testConcurrentAudits},
		{"RevisionsAndChanges", testRevisionsAndChanges},
		{"OneRevisionPerChange", testOneRevisionPerChange},
		{"Watch", testWatch},
		{"ConcurrentWriters", testConcurrentWriters},
		{"ConcurrentMixedWriters", testConcurrentMixedWriters},
		{"Federation", testFederation},
		{"Health", testHealth},
		{"Users", testUsers},
	} {
		t.Run(part.name, func(t *testing.T) { part.run(t, h) })
	}
}

// t0 is where the suite's clocks start: whole microseconds, which every backend keeps exactly.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 123456000, time.UTC)

type harness struct{ open Open }

// new opens a fresh backend whose clock starts at t0 and advances one second per reading.
func (h harness) new(t *testing.T) store.Backend {
	t.Helper()
	c := NewClock(t0)
	return h.open(t, c.Now)
}

// Clock is a fake clock that advances one second per reading, so that every stored time is distinct.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a Clock whose first reading is one second after start.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now advances the clock by one second and returns it.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(time.Second)
	return c.now
}

// IDComparer compares SPIFFE IDs for go-cmp.
var IDComparer = cmp.Comparer(func(a, b spiffeid.ID) bool { return a == b })

// ID parses a SPIFFE ID or fails the test.
func ID(t testing.TB, s string) spiffeid.ID {
	t.Helper()
	v, err := spiffeid.FromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Selector parses "type:key:value" without validation.
func Selector(s string) attestation.Selector {
	typ, rest, _ := strings.Cut(s, ":")
	key, value, _ := strings.Cut(rest, ":")
	return attestation.Selector{Type: typ, Key: key, Value: value}
}

// Entry is the n-th test entry: its own SPIFFE ID and uid selector, parented to one agent.
func Entry(t testing.TB, n int) store.Entry {
	return store.Entry{
		SPIFFEID:  ID(t, fmt.Sprintf("spiffe://kith.test/workload/%d", n)),
		ParentID:  ID(t, "spiffe://kith.test/kith/agent/join_token/node1"),
		Selectors: []attestation.Selector{Selector(fmt.Sprintf("unix:uid:%d", 1000+n))},
	}
}

// MustVerify verifies the audit chain and fails the test unless it is intact.
func MustVerify(t *testing.T, s store.Audit) store.AuditVerification {
	t.Helper()
	v, err := s.VerifyAudit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK {
		t.Fatalf("VerifyAudit: broken at %d: %s", v.BrokenAt, v.Problem)
	}
	return v
}

func mustRevision(t *testing.T, s store.Feed) int64 {
	t.Helper()
	rev, err := s.Revision(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// auditActions returns the actions of the audit events about target, in order.
func auditActions(t *testing.T, s store.Audit, target string) []string {
	t.Helper()
	evs, err := s.ListAudit(context.Background(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, ev := range evs {
		if ev.Target == target {
			actions = append(actions, ev.Action)
		}
	}
	return actions
}

func testHealth(t *testing.T, h harness) {
	ctx := context.Background()
	s := h.new(t)
	for i := range 3 {
		if _, err := s.CreateEntry(ctx, "test", Entry(t, i)); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("a healthy store probes without error", func(t *testing.T) {
		if err := s.Probe(ctx); err != nil {
			t.Fatalf("Probe = %v", err)
		}
	})
	t.Run("a healthy store's integrity check finds nothing and names what it ran", func(t *testing.T) {
		check, problems, err := s.Check(ctx)
		if err != nil || check == "" || len(problems) != 0 {
			t.Fatalf("Check = %q, %v, %v; want a check name and no problems", check, problems, err)
		}
	})
	t.Run("a probe past its deadline fails", func(t *testing.T) {
		done, cancel := context.WithCancel(ctx)
		cancel()
		if err := s.Probe(done); err == nil {
			t.Fatal("Probe with a cancelled context = nil, want an error")
		}
	})
}
