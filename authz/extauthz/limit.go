package extauthz

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"
)

// Defaults of Config.Deadline, MaxEvaluations and MaxPerCaller.
const DefaultDeadline = 50 * time.Millisecond

// DefaultMaxEvaluations is 4 × GOMAXPROCS, at least 8.
func DefaultMaxEvaluations() int { return max(8, 4*runtime.GOMAXPROCS(0)) }

// DefaultMaxPerCaller is half of GOMAXPROCS, at least 1: one caller's evaluations can keep at most half
// the CPUs busy, whatever they cost.
func DefaultMaxPerCaller() int { return max(1, runtime.GOMAXPROCS(0)/2) }

// limiter bounds concurrent evaluations: at most perCaller for one caller and global in all. A request
// takes its caller's slot first and a global one second, so a caller waiting for its own slots holds
// no global one and cannot starve the others.
type limiter struct {
	global    chan struct{}
	perCaller int

	mu      sync.Mutex
	callers map[string]*callerSlots // callers with an evaluation running or waiting
}

type callerSlots struct {
	ch   chan struct{}
	refs int
}

func newLimiter(global, perCaller int) *limiter {
	return &limiter{global: make(chan struct{}, global), perCaller: perCaller, callers: map[string]*callerSlots{}}
}

// overloadError says which bound a request waited on until its deadline.
type overloadError struct {
	caller string
	what   string
	n      int
}

func (e *overloadError) Error() string {
	who := e.caller
	if who == "" {
		who = "requests without a caller identity"
	}
	return fmt.Sprintf("%s: %d evaluations already in flight (%s)", who, e.n, e.what)
}

// acquire waits for a slot for caller until ctx is done, and returns the function that frees it.
func (l *limiter) acquire(ctx context.Context, caller string) (func(), error) {
	l.mu.Lock()
	cs := l.callers[caller]
	if cs == nil {
		cs = &callerSlots{ch: make(chan struct{}, l.perCaller)}
		l.callers[caller] = cs
	}
	cs.refs++
	l.mu.Unlock()
	unref := func() {
		l.mu.Lock()
		if cs.refs--; cs.refs == 0 {
			delete(l.callers, caller)
		}
		l.mu.Unlock()
	}
	select {
	case cs.ch <- struct{}{}:
	default:
		select {
		case cs.ch <- struct{}{}:
		case <-ctx.Done():
			unref()
			return nil, &overloadError{caller: caller, what: "the per-caller limit, authz_max_per_caller", n: l.perCaller}
		}
	}
	select {
	case l.global <- struct{}{}:
	default:
		select {
		case l.global <- struct{}{}:
		case <-ctx.Done():
			<-cs.ch
			unref()
			return nil, &overloadError{caller: "all callers", what: "the agent's limit, authz_max_evaluations", n: cap(l.global)}
		}
	}
	return func() {
		<-l.global
		<-cs.ch
		unref()
	}, nil
}
