package syncer_test

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/catest"
	"github.com/kithid/kith/internal/agent/agenttest"
	"github.com/kithid/kith/internal/agent/rotation"
	"github.com/kithid/kith/internal/agent/syncer"
	"github.com/kithid/kith/internal/testutil"
)

// fakeSVID is an agent SVID due for renewal at renewAt; renewing moves that an hour on.
type fakeSVID struct {
	mu      sync.Mutex
	renewAt time.Time
	renewed int
}

func (f *fakeSVID) RenewAt() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.renewAt
}

func (f *fakeSVID) Renew(ctx context.Context, c rotation.Renewer) error {
	_, csr, err := ca.NewKeyAndCSR(spiffeid.RequireFromString("spiffe://example.org/kith/agent/join_token/n1"))
	if err != nil {
		return err
	}
	if _, err := c.RenewAgent(ctx, &agentv1.RenewAgentRequest{Csr: csr}); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.renewed++
	f.renewAt = time.Now().Add(time.Hour)
	return nil
}

func (f *fakeSVID) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.renewed
}

// counter counts calls of the callbacks a Syncer makes.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) inc(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[name]++
}

func (c *counter) get() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.n)
}

type closer struct{ c *counter }

func (c closer) Close() error { c.c.inc("close"); return nil }

// start runs a Syncer against srv in the current synctest bubble, until the test ends.
func start(t *testing.T, srv *agenttest.Server, svid *fakeSVID, withAttest bool, applied chan<- *agentv1.SyncResponse) *counter {
	return startLogging(t, srv, svid, withAttest, applied, nil)
}

func startLogging(t *testing.T, srv *agenttest.Server, svid *fakeSVID, withAttest bool, applied chan<- *agentv1.SyncResponse, log *slog.Logger) *counter {
	t.Helper()
	calls := &counter{}
	cfg := syncer.Config{
		Logger:    log,
		Dial:      func() (syncer.Client, io.Closer, error) { calls.inc("dial"); return srv, closer{calls}, nil },
		AgentSVID: svid,
		Revision:  func() int64 { return 7 },
		Apply: func(_ context.Context, m *agentv1.SyncResponse) error {
			applied <- m
			return nil
		},
		Save:         func() error { calls.inc("save"); return nil },
		OnConnect:    func() { calls.inc("connect") },
		OnDisconnect: func() { calls.inc("disconnect") },
	}
	if withAttest {
		cfg.Attest = func(context.Context) error { calls.inc("attest"); return nil }
	}
	s, err := syncer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	return calls
}

func newServer(t *testing.T) *agenttest.Server {
	return &agenttest.Server{CA: catest.NewCA(t, spiffeid.RequireTrustDomainFromString("example.org"))}
}

func TestSyncerAppliesMessagesAndReconnectsWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newServer(t)
		applied := make(chan *agentv1.SyncResponse, 4)
		calls := start(t, srv, &fakeSVID{renewAt: time.Now().Add(time.Hour)}, false, applied)
		first := <-srv.Streams()
		if first.Request.GetRevision() != 7 {
			t.Errorf("asked from revision %d, want 7", first.Request.GetRevision())
		}
		first.Send(&agentv1.SyncResponse{Revision: 8})
		if got := (<-applied).GetRevision(); got != 8 {
			t.Errorf("applied revision %d, want 8", got)
		}
		first.End(status.Error(codes.Unavailable, "server going away"))
		synctest.Wait()
		if diff := cmp.Diff(map[string]int{"dial": 1, "connect": 1, "disconnect": 1, "close": 1}, calls.get()); diff != "" {
			t.Errorf("after the stream broke (-want +got):\n%s", diff)
		}
		time.Sleep(99 * time.Millisecond) // the first backoff is 100 ms and up to 50 ms of jitter
		synctest.Wait()
		if n := srv.Calls("Sync"); n != 1 {
			t.Errorf("reconnected within 99 ms (%d streams)", n)
		}
		time.Sleep(52 * time.Millisecond)
		synctest.Wait()
		if n := srv.Calls("Sync"); n != 2 {
			t.Errorf("%d streams after 151 ms, want 2", n)
		}
		<-srv.Streams()
	})
}

func TestSyncerLogsWhenTheServerIsBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newServer(t)
		var logs testutil.Buffer
		applied := make(chan *agentv1.SyncResponse, 4)
		startLogging(t, srv, &fakeSVID{renewAt: time.Now().Add(time.Hour)}, false, applied, slog.New(slog.NewTextHandler(&logs, nil)))
		first := <-srv.Streams()
		first.Send(&agentv1.SyncResponse{Revision: 8})
		<-applied
		first.End(status.Error(codes.Unavailable, "server going away"))
		second := <-srv.Streams()
		synctest.Wait()
		if strings.Contains(logs.String(), "restored") {
			t.Fatalf("restored logged before the server sent anything:\n%s", logs.String())
		}
		second.Send(&agentv1.SyncResponse{Revision: 9})
		<-applied
		synctest.Wait()
		if !strings.Contains(logs.String(), "sync with server interrupted") || !strings.Contains(logs.String(), "msg=\"sync with server restored\" down_for=") {
			t.Errorf("logs:\n%s\nwant the interruption and then the restoration", logs.String())
		}
		if n := strings.Count(logs.String(), "restored"); n != 1 {
			t.Errorf("restored logged %d times, want once", n)
		}
	})
}

func TestSyncerAttestsAgainOnceWhenRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newServer(t)
		srv.Fail("Sync", status.Error(codes.PermissionDenied, "agent evicted"))
		calls := start(t, srv, &fakeSVID{renewAt: time.Now().Add(time.Hour)}, true, nil)
		synctest.Wait()
		// Refused, attested and saved, then tried again at once: refused again, so waiting.
		if diff := cmp.Diff(map[string]int{"dial": 2, "close": 2, "attest": 1, "save": 1}, calls.get()); diff != "" {
			t.Errorf("after the first refusal (-want +got):\n%s", diff)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if got := calls.get()["attest"]; got != 1 {
			t.Errorf("attested %d times, want once", got)
		}
		if n := srv.Calls("Sync"); n < 5 {
			t.Errorf("%d tries in a minute, want it to keep trying", n)
		}
	})
}

func TestSyncerEndsTheStreamToRenewTheAgentSVID(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newServer(t)
		svid := &fakeSVID{renewAt: time.Now().Add(30 * time.Minute)}
		calls := start(t, srv, svid, false, nil)
		<-srv.Streams()
		time.Sleep(30*time.Minute - time.Millisecond)
		synctest.Wait()
		if svid.count() != 0 || calls.get()["disconnect"] != 0 {
			t.Fatalf("stream ended or svid renewed before its renewal time")
		}
		time.Sleep(time.Second)
		synctest.Wait()
		<-srv.Streams()
		// The stream ended at the renewal time; the next connection renewed, the one after streams.
		if diff := cmp.Diff(map[string]int{"dial": 3, "close": 2, "connect": 2, "disconnect": 1}, calls.get()); diff != "" {
			t.Errorf("calls (-want +got):\n%s", diff)
		}
		if svid.count() != 1 || srv.Calls("RenewAgent") != 1 {
			t.Errorf("renewed %d times (%d RenewAgent calls), want 1", svid.count(), srv.Calls("RenewAgent"))
		}
	})
}

// A session that synced and then broke (its server killed) is a first failure: the agent reconnects
// (to the next server) after the first backoff, however many such failures came before, so that failover
// stays fast after several server losses.
func TestSyncerRestartsTheBackoffAfterASessionThatSynced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newServer(t)
		applied := make(chan *agentv1.SyncResponse, 4)
		start(t, srv, &fakeSVID{renewAt: time.Now().Add(time.Hour)}, false, applied)
		for i := range 5 {
			s := <-srv.Streams()
			s.Send(&agentv1.SyncResponse{Revision: int64(8 + i)})
			<-applied
			s.End(status.Error(codes.Unavailable, "server killed"))
			synctest.Wait()
			broke := time.Now()
			time.Sleep(151 * time.Millisecond) // the first backoff (100 ms) and its jitter (up to 50 ms)
			synctest.Wait()
			if n := srv.Calls("Sync"); n != i+2 {
				t.Fatalf("failure %d: %d streams %s after the break, want the agent back within the first backoff", i+1, n, time.Since(broke))
			}
		}
	})
}
