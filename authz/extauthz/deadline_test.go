package extauthz_test

import (
	"cmp"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/extauthz"
)

// slowPolicy makes GET /slow cost about 10^10 steps (minutes) and every other request nothing.
const slowPolicy = `package kith.ext

deny contains "never" if {
	input.kith.path == "/slow"
	some i in numbers.range(1, 100000)
	some j in numbers.range(1, 100000)
	i * j == -1
}
`

func slowEngine(t *testing.T) *authz.Engine {
	t.Helper()
	e, err := authz.New(authz.Config{Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SetPolicy(context.Background(), "slow", map[string]string{"slow.rego": slowPolicy}); err != nil {
		t.Fatal(err)
	}
	mustPut(t, e,
		authz.Grant{ID: "a", Caller: frontend.String(), Target: payments.String()},
		authz.Grant{ID: "b", Caller: batch.String(), Target: payments.String()},
	)
	return e
}

// startedDecider reports each Decide call for caller on started before deciding.
type startedDecider struct {
	extauthz.Decider
	caller  string
	started chan struct{}
}

func (d startedDecider) Decide(ctx context.Context, in authz.Input) (authz.Decision, error) {
	if in.Caller.String() == d.caller {
		select {
		case d.started <- struct{}{}:
		default:
		}
	}
	return d.Decider.Decide(ctx, in)
}

func TestCheckHasADeadlineAndCallersShareFairly(t *testing.T) {
	tests := []struct {
		name string
		cfg  extauthz.Config
		// wantA is the reason the costly requests are denied with.
		wantA string
		// bWithin bounds caller B's check (its client's deadline). Zero: the server's deadline.
		bWithin time.Duration
	}{
		{
			name:  "costly requests are cut at the default deadline, others still answer",
			cfg:   extauthz.Config{},
			wantA: "no decision within the 50ms ext_authz deadline (authz_deadline)",
		},
		{
			// A long deadline: caller A's four requests would keep every slot busy for it without the
			// per-caller bound; with it, one evaluates, three wait, and B finds a slot.
			name:    "one caller's costly requests cannot take every evaluation slot",
			cfg:     extauthz.Config{Deadline: 3 * time.Second, MaxEvaluations: 2, MaxPerCaller: 1},
			wantA:   "ext_authz deadline (authz_deadline)",
			bWithin: time.Second, // while A's requests hold their slots for 3 s
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			started := make(chan struct{}, 1)
			var mu sync.Mutex
			outcomes := map[string]int{}
			tt.cfg.Decider = startedDecider{Decider: slowEngine(t), caller: frontend.String(), started: started}
			tt.cfg.OnDecision = func(_, _, outcome string) { mu.Lock(); outcomes[outcome]++; mu.Unlock() }
			client := serve(t, "unix", tt.cfg)

			var wg sync.WaitGroup
			aResults := make([]result, 4)
			aTook := make([]time.Duration, 4)
			for i := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					start := time.Now()
					resp, err := client.Check(ctx, request{caller: frontend.String(), target: payments.String(), method: "GET", path: "/slow"}.proto())
					aTook[i] = time.Since(start)
					if err != nil {
						t.Error(err)
						return
					}
					aResults[i] = summarize(resp)
				}()
			}
			select {
			case <-started:
			case <-time.After(10 * time.Second):
				t.Fatal("caller A's costly request never started evaluating")
			}

			deadline := tt.cfg.Deadline
			if deadline == 0 {
				deadline = extauthz.DefaultDeadline
			}
			bWithin := cmp.Or(tt.bWithin, deadline)
			bctx, cancel := context.WithTimeout(ctx, bWithin)
			defer cancel()
			resp, err := client.Check(bctx, request{caller: batch.String(), target: payments.String(), method: "GET", path: "/api/x"}.proto())
			if err != nil {
				t.Fatalf("caller B's ordinary check did not answer within %s: %v", bWithin, err)
			}
			if got := summarize(resp); got.Code != 0 {
				t.Errorf("caller B's ordinary check: code %d, headers %v; want allowed", got.Code, got.Headers)
			}

			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(deadline + 10*time.Second):
				t.Fatalf("caller A's costly requests were still running %s after the %s deadline", 10*time.Second, deadline)
			}
			for i, r := range aResults {
				if r.Code != 7 || r.HTTPStatus != 403 || !strings.Contains(r.Headers["x-kith-reason"], tt.wantA) {
					t.Errorf("caller A's costly request %d: code %d status %d reason %q; want denied 403 with %q", i, r.Code, r.HTTPStatus, r.Headers["x-kith-reason"], tt.wantA)
				}
				if aTook[i] > deadline+time.Second {
					t.Errorf("caller A's costly request %d took %s, want about the %s deadline", i, aTook[i], deadline)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if outcomes[extauthz.OutcomeTimeout] != 4 || outcomes[extauthz.OutcomeAllow] != 1 {
				t.Errorf("outcomes %v, want 4 %s and 1 %s", outcomes, extauthz.OutcomeTimeout, extauthz.OutcomeAllow)
			}
		})
	}
}
