package rotation_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/ca/catest"
	"github.com/kithid/kith/internal/agent/agenttest"
	"github.com/kithid/kith/internal/agent/rotation"
	"github.com/kithid/kith/svid/cache"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func entry(id string, rev int64) cache.Entry {
	return cache.Entry{ID: id, SPIFFEID: spiffeid.RequireFromPath(td, "/"+id), Revision: rev}
}

// fixture runs a Manager over a cache against a fake server in the current synctest bubble; connected
// says whether the agent is connected (the Manager's Signer is nil when not). It stops when the test ends.
type fixture struct {
	cache     *cache.Cache
	srv       *agenttest.Server
	mgr       *rotation.Manager
	connected atomic.Bool
}

func newFixture(t *testing.T, ttl time.Duration, entries ...cache.Entry) *fixture {
	t.Helper()
	f := &fixture{cache: cache.New(), srv: &agenttest.Server{CA: catest.NewCA(t, td), TTL: ttl}}
	f.connected.Store(true)
	f.cache.ReplaceEntries(entries, 1)
	mgr, err := rotation.New(rotation.Config{Cache: f.cache, RotateAtPercent: 50, Logger: slog.New(slog.DiscardHandler),
		Signer: func() rotation.Signer {
			if !f.connected.Load() {
				return nil
			}
			return f.srv
		}})
	if err != nil {
		t.Fatal(err)
	}
	f.mgr = mgr
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- mgr.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	return f
}

// serials is the serial number of each entry's SVID in the cache.
func (f *fixture) serials() map[string]string {
	out := map[string]string{}
	for id, s := range f.cache.SVIDs() {
		x, err := s.X509SVID()
		if err != nil {
			panic(err)
		}
		out[id] = x.Certificates[0].SerialNumber.Text(16)
	}
	return out
}

func TestManagerSignsNewEntriesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, time.Hour, entry("web", 1), entry("api", 1))
		synctest.Wait()
		if diff := cmp.Diff([]string{"api", "web"}, sortedKeys(f.serials())); diff != "" {
			t.Errorf("entries with an svid (-want +got):\n%s", diff)
		}
		if n := f.srv.Calls("SignX509SVIDs"); n != 1 {
			t.Errorf("%d sign calls, want 1 batch", n)
		}
	})
}

func TestManagerRotatesAtHalfLifeWithJitter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, time.Hour, entry("web", 1))
		synctest.Wait()
		first := f.serials()["web"]

		time.Sleep(26 * time.Minute) // before 45 % of an hour: 50 % less the most jitter
		synctest.Wait()
		if got := f.serials()["web"]; got != first {
			t.Fatalf("rotated after 26 min, before 45 %% of its life")
		}
		time.Sleep(8 * time.Minute) // 34 min: past 55 %
		synctest.Wait()
		if got := f.serials()["web"]; got == first {
			t.Fatalf("not rotated after 34 min, past 55 %% of its life")
		}
		if diff := cmp.Diff([]string{"web", "web"}, f.srv.Signed()); diff != "" {
			t.Errorf("signed (-want +got):\n%s", diff)
		}
	})
}

func TestManagerWaitsWhileNotConnected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, time.Hour)
		f.connected.Store(false)
		f.cache.ApplyDelta([]cache.Entry{entry("web", 2)}, nil, 2)
		time.Sleep(time.Hour)
		synctest.Wait()
		if n := f.srv.Calls("SignX509SVIDs"); n != 0 {
			t.Fatalf("%d sign calls while not connected, want 0", n)
		}
		f.connected.Store(true)
		f.mgr.Poke()
		synctest.Wait()
		if diff := cmp.Diff([]string{"web"}, f.srv.Signed()); diff != "" {
			t.Errorf("signed after connecting (-want +got):\n%s", diff)
		}
	})
}

func TestManagerRetriesWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, time.Hour)
		f.srv.Fail("SignX509SVIDs", errors.New("server unavailable"))
		f.cache.ApplyDelta([]cache.Entry{entry("web", 2)}, nil, 2)
		synctest.Wait()
		var calls []int
		for _, wait := range []time.Duration{199 * time.Millisecond, time.Millisecond, 399 * time.Millisecond, time.Millisecond} {
			time.Sleep(wait)
			synctest.Wait()
			calls = append(calls, f.srv.Calls("SignX509SVIDs"))
		}
		// Tried at once, again after 200 ms, then after 400 ms more.
		if diff := cmp.Diff([]int{1, 2, 2, 3}, calls); diff != "" {
			t.Errorf("sign calls at 199 ms, 200 ms, 599 ms, 600 ms (-want +got):\n%s", diff)
		}
		f.srv.Fail("SignX509SVIDs", nil)
		time.Sleep(800 * time.Millisecond)
		synctest.Wait()
		if diff := cmp.Diff([]string{"web"}, f.srv.Signed()); diff != "" {
			t.Errorf("signed once the server answers (-want +got):\n%s", diff)
		}
	})
}

func TestManagerSignsAgainWhenAnEntryChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, time.Hour, entry("web", 1), entry("api", 1))
		synctest.Wait()
		f.cache.ApplyDelta([]cache.Entry{entry("web", 2)}, nil, 2)
		synctest.Wait()
		if diff := cmp.Diff([]string{"web"}, f.srv.Signed()[2:]); diff != "" {
			t.Errorf("signed after the change (-want +got):\n%s", diff)
		}
	})
}

func sortedKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
