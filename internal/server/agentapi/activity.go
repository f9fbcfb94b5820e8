package agentapi

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/internal/server/apierr"
)

// Bounds on one agent's activity report: an agent holds one SVID per entry it serves, and counts at most
// 1,000 caller/target pairs (and overflow rows per target).
const (
	maxReportedSVIDs     = 100_000
	maxReportedDecisions = 10_000
	maxReportedIDLength  = 2048
)

// agentActivity is what an agent's activity reports add up to: its last full report with the deltas
// after it applied.
type agentActivity struct {
	at        time.Time
	seq       uint64                          // the number of the last report applied
	svids     map[string]*agentv1.HeldSVID    // by entry ID
	decisions map[pair]*agentv1.DecisionCount // by caller and target
}

type pair struct{ caller, target string }

// HeldSVID is an X.509-SVID an agent reported holding.
type HeldSVID struct {
	Agent, Entry, Serial string
	ExpiresAt            time.Time
}

// CallerDecisions counts the decisions about one target for one caller.
type CallerDecisions struct {
	Caller          string
	Allowed, Denied uint64
}

// Activity is what the agents connected to this server last reported about one identity.
type Activity struct {
	SVIDs   []HeldSVID        // by agent, then entry
	Callers []CallerDecisions // summed over agents, most decisions first
	Agents  int               // agents whose reports mention the identity
	Oldest  time.Time         // the oldest of those reports
}

// checkActivity validates an activity report before it is kept.
func checkActivity(req *agentv1.ReportStatusRequest) error {
	if n := len(req.GetSvids()) + len(req.GetRemovedSvidEntryIds()); n > maxReportedSVIDs {
		return apierr.Invalid(fmt.Sprintf("activity report: %d svids, at most %d", n, maxReportedSVIDs))
	}
	if n := len(req.GetDecisions()); n > maxReportedDecisions {
		return apierr.Invalid(fmt.Sprintf("activity report: %d decision counts, at most %d", n, maxReportedDecisions))
	}
	for _, s := range req.GetSvids() {
		if len(s.GetSpiffeId()) > maxReportedIDLength || len(s.GetEntryId()) > maxReportedIDLength || len(s.GetSerialNumber()) > 64 {
			return apierr.Invalid("activity report: an svid's spiffe id, entry id or serial number is too long")
		}
	}
	for _, d := range req.GetDecisions() {
		if len(d.GetCaller()) > maxReportedIDLength || len(d.GetTarget()) > maxReportedIDLength {
			return apierr.Invalid("activity report: a decision count's caller or target is too long")
		}
	}
	for _, e := range req.GetRemovedSvidEntryIds() {
		if len(e) > maxReportedIDLength {
			return apierr.Invalid("activity report: a removed entry id is too long")
		}
	}
	if req.GetActivityBaseSeq() != 0 && req.GetActivitySeq() <= req.GetActivityBaseSeq() {
		return apierr.Invalid(fmt.Sprintf("activity report: delta %d does not follow its base %d", req.GetActivitySeq(), req.GetActivityBaseSeq()))
	}
	return nil
}

// recordActivity applies agent id's activity report: a full one replaces what the server held, a delta
// (ActivityBaseSeq set) is applied to the report it follows. It reports false when the server does not hold
// that base (it restarted, or the agent reported to another server meanwhile): the agent then sends a full
// report. Kept in memory, per server: an agent reports to the server it is connected to. A delta that would
// take the agent past the bounds of one report is refused.
func (s *Service) recordActivity(id spiffeid.ID, req *agentv1.ReportStatusRequest) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.activity == nil {
		s.activity = map[spiffeid.ID]*agentActivity{}
	}
	cur := s.activity[id]
	if base := req.GetActivityBaseSeq(); base != 0 {
		if cur == nil || cur.seq != base {
			return false, nil
		}
	} else {
		cur = &agentActivity{svids: map[string]*agentv1.HeldSVID{}, decisions: map[pair]*agentv1.DecisionCount{}}
	}
	for _, e := range req.GetRemovedSvidEntryIds() {
		delete(cur.svids, e)
	}
	for _, h := range req.GetSvids() {
		cur.svids[h.GetEntryId()] = h
	}
	for _, d := range req.GetDecisions() {
		cur.decisions[pair{d.GetCaller(), d.GetTarget()}] = d
	}
	if len(cur.svids) > maxReportedSVIDs || len(cur.decisions) > maxReportedDecisions {
		delete(s.activity, id) // the next report is a full one
		return false, apierr.Invalid(fmt.Sprintf("activity report: the agent would hold %d svids and %d decision counts, at most %d and %d",
			len(cur.svids), len(cur.decisions), maxReportedSVIDs, maxReportedDecisions))
	}
	cur.at, cur.seq = s.cfg.Now(), req.GetActivitySeq()
	s.activity[id] = cur
	return true, nil
}

// IdentityActivity returns what the agents connected to this server last reported about identity id.
func (s *Service) IdentityActivity(id string) Activity {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out Activity
	callers := map[string]*CallerDecisions{}
	for agent, a := range s.activity {
		mentioned := false
		for _, h := range a.svids {
			if h.GetSpiffeId() == id {
				mentioned = true
				out.SVIDs = append(out.SVIDs, HeldSVID{Agent: agent.String(), Entry: h.GetEntryId(), Serial: h.GetSerialNumber(), ExpiresAt: h.GetExpiresAt().AsTime()})
			}
		}
		for _, d := range a.decisions {
			if d.GetTarget() != id {
				continue
			}
			mentioned = true
			c := callers[d.GetCaller()]
			if c == nil {
				c = &CallerDecisions{Caller: d.GetCaller()}
				callers[d.GetCaller()] = c
			}
			c.Allowed += d.GetAllowed()
			c.Denied += d.GetDenied()
		}
		if mentioned {
			out.Agents++
			if out.Oldest.IsZero() || a.at.Before(out.Oldest) {
				out.Oldest = a.at
			}
		}
	}
	for _, c := range callers {
		out.Callers = append(out.Callers, *c)
	}
	slices.SortFunc(out.Callers, func(a, b CallerDecisions) int {
		return cmp.Or(cmp.Compare(b.Allowed+b.Denied, a.Allowed+a.Denied), cmp.Compare(a.Caller, b.Caller))
	})
	slices.SortFunc(out.SVIDs, func(a, b HeldSVID) int { return cmp.Or(cmp.Compare(a.Agent, b.Agent), cmp.Compare(a.Entry, b.Entry)) })
	return out
}
