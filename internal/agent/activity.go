package agent

import (
	"crypto/x509"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/authz/extauthz"
	"github.com/kithid/kith/svid/cache"
)

// maxDecisionPairs bounds the caller/target pairs the agent counts decisions for: callers come from
// requests, so past it every new caller is counted as otherCaller.
const maxDecisionPairs = 1000

// otherCaller counts the decisions of callers past maxDecisionPairs.
const otherCaller = "other"

type pair struct{ caller, target string }

type tally struct{ allowed, denied uint64 }

// activity counts the agent's ext_authz decisions per caller and target served, for its status reports.
type activity struct {
	served *servedIDs
	mu     sync.Mutex
	counts map[pair]*tally

	smu     sync.Mutex
	serials map[*cache.SVID]string // each held SVID's serial, parsed once
}

func newActivity(served *servedIDs) *activity {
	return &activity{served: served, counts: map[pair]*tally{}}
}

// decision counts one decision about a target this agent serves; others are not its to report.
func (a *activity) decision(caller, target, outcome string) {
	if !a.served.has(target) {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	k := pair{caller, target}
	t := a.counts[k]
	if t == nil {
		if len(a.counts) >= maxDecisionPairs {
			k.caller = otherCaller
			if t = a.counts[k]; t == nil && len(a.counts) >= maxDecisionPairs+maxDecisionPairs/10 {
				return // even the per-target overflow rows are full: only metrics count it
			}
		}
		if t == nil {
			t = &tally{}
			a.counts[k] = t
		}
	}
	if outcome == extauthz.OutcomeAllow {
		t.allowed++
	} else {
		t.denied++
	}
}

// decisions returns the counts, sorted by target and caller.
func (a *activity) decisions() []*agentv1.DecisionCount {
	a.mu.Lock()
	out := make([]*agentv1.DecisionCount, 0, len(a.counts))
	for k, t := range a.counts {
		out = append(out, &agentv1.DecisionCount{Caller: k.caller, Target: k.target, Allowed: t.allowed, Denied: t.denied})
	}
	a.mu.Unlock()
	slices.SortFunc(out, func(x, y *agentv1.DecisionCount) int {
		if c := strings.Compare(x.GetTarget(), y.GetTarget()); c != 0 {
			return c
		}
		return strings.Compare(x.GetCaller(), y.GetCaller())
	})
	return out
}

// heldSVIDs lists the workload X.509-SVIDs in c, sorted by entry ID. Each certificate is parsed once, when
// first reported.
func (a *activity) heldSVIDs(c *cache.Cache) []*agentv1.HeldSVID {
	svids := c.SVIDs()
	a.smu.Lock()
	defer a.smu.Unlock()
	seen := make(map[*cache.SVID]string, len(svids))
	out := make([]*agentv1.HeldSVID, 0, len(svids))
	for id, s := range svids {
		serial, ok := a.serials[s]
		if !ok {
			if cert, err := x509.ParseCertificate(s.Leaf); err == nil {
				serial = cert.SerialNumber.Text(16)
			}
		}
		seen[s] = serial
		out = append(out, &agentv1.HeldSVID{EntryId: id, SpiffeId: s.ID.String(), SerialNumber: serial, ExpiresAt: timestamppb.New(s.NotAfter)})
	}
	a.serials = seen
	slices.SortFunc(out, func(x, y *agentv1.HeldSVID) int { return strings.Compare(x.GetEntryId(), y.GetEntryId()) })
	return out
}
