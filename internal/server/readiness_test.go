package server

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeProber is a store whose probe fails with err, or hangs until its deadline when hang is set.
type fakeProber struct {
	mu   sync.Mutex
	err  error
	hang bool
}

func (f *fakeProber) set(err error, hang bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err, f.hang = err, hang
}

func (f *fakeProber) Probe(ctx context.Context) error {
	f.mu.Lock()
	err, hang := f.err, f.hang
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
		return ctx.Err()
	}
	return err
}

// A store that stops reading while the server runs makes /readyz fail with the reason within one probe
// interval; it was "ready" as long as the revision row could be read.
func TestReadyzFailsWhenTheStoreCannotRead(t *testing.T) {
	s, err := newDataDirServer(t, t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	malformed := errors.New("database disk image is malformed (11)")
	for _, tc := range []struct {
		name     string
		err      error
		hang     bool
		wantCode int
		wantBody string
	}{
		{"a store that reads is ready", nil, false, http.StatusOK, "ready"},
		{"a store whose reads fail is not ready, and says why", malformed, false, http.StatusServiceUnavailable, "the store cannot read"},
		{"a store whose reads hang is not ready once the deadline passes", nil, true, http.StatusServiceUnavailable, "did not answer a read within 2s"},
		{"a store that reads again is ready again", nil, false, http.StatusOK, "ready"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fake := &fakeProber{}
				fake.set(tc.err, tc.hang)
				s.health = &readiness{store: fake, now: time.Now}
				s.health.probe(t.Context()) // at start, as New does
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan struct{})
				go func() { s.health.Run(ctx); close(done) }()
				time.Sleep(probeEvery + probeTimeout + time.Second)
				synctest.Wait()
				rec := httptest.NewRecorder()
				s.httpHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
				cancel()
				<-done
				if diff := cmp.Diff(tc.wantCode, rec.Code); diff != "" || !strings.Contains(rec.Body.String(), tc.wantBody) {
					t.Errorf("/readyz = %d %q, want %d containing %q", rec.Code, rec.Body.String(), tc.wantCode, tc.wantBody)
				}
			})
		})
	}
	t.Run("a probe that has not succeeded for longer than its interval and two deadlines is not ready", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := &readiness{store: &fakeProber{}, now: time.Now}
			r.probe(t.Context())
			if err := r.check(); err != nil {
				t.Fatalf("check after a good probe = %v", err)
			}
			time.Sleep(probeEvery + 2*probeTimeout + time.Second) // no Run: nothing probes
			if err := r.check(); err == nil || !strings.Contains(err.Error(), "a read is hanging") {
				t.Fatalf("check with a stale probe = %v, want a hanging read", err)
			}
		})
	})
}
