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

// agentActivity is an agent's last activity report.
type agentActivity struct {
	at        time.Time
	svids     []*agentv1.HeldSVID
	decisions []*agentv1.DecisionCount
}

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
	if n := len(req.GetSvids()); n > maxReportedSVIDs {
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
	return nil
}

// recordActivity keeps agent id's activity report, replacing its previous one. Kept in memory, per server:
// an agent reports to the server it is connected to, again when it connects.
func (s *Service) recordActivity(id spiffeid.ID, req *agentv1.ReportStatusRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.activity == nil {
		s.activity = map[spiffeid.ID]agentActivity{}
	}
	s.activity[id] = agentActivity{at: s.cfg.Now(), svids: req.GetSvids(), decisions: req.GetDecisions()}
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
