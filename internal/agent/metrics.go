package agent

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kithid/kith/svid/cache"
)

// otherTarget labels decisions whose target is not the SPIFFE ID of an entry this agent serves. Targets
// come from the request, so any local process could otherwise add a series per string it sends.
const otherTarget = "other"

// metrics are the agent's Prometheus metrics, served by the agent's metrics listener when configured.
// Label values are bounded: none is taken from a request as sent.
type metrics struct {
	reg       *prometheus.Registry
	sdsNACKs  prometheus.Counter
	decisions *prometheus.CounterVec
	served    servedIDs
}

func newMetrics(c *cache.Cache) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		sdsNACKs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kith_sds_nack_total", Help: "SDS responses a proxy rejected (NACK); the proxy's node id is in the log.",
		}),
		served: servedIDs{cache: c},
	}
	m.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kith_authz_decisions_total",
		Help: `Authorization decisions on this agent, by target and outcome (allow, deny, audit_deny, error, timeout: no decision within authz_deadline). The target is "other" unless it is the SPIFFE ID of an entry this agent serves.`,
	}, []string{"target", "outcome"})
	m.reg.MustRegister(m.sdsNACKs, m.decisions)
	return m
}

// decision counts an ext_authz decision.
func (m *metrics) decision(target, outcome string) {
	if !m.served.has(target) {
		target = otherTarget
	}
	m.decisions.WithLabelValues(target, outcome).Inc()
}

// nack counts a proxy's NACK. The node id is not a label: the proxy chooses it (the SDS server logs it).
func (m *metrics) nack(string) { m.sdsNACKs.Inc() }

// servedIDs answers whether a SPIFFE ID is one of the cache's entries, from a set rebuilt after the cache
// changes.
type servedIDs struct {
	cache *cache.Cache
	mu    sync.Mutex // held while rebuilding
	snap  atomic.Pointer[idSet]
}

type idSet struct {
	changed <-chan struct{} // the cache's change channel when ids was read
	ids     map[string]struct{}
}

func (s *servedIDs) has(id string) bool {
	if id == "" {
		return false
	}
	changed := s.cache.Changed()
	set := s.snap.Load()
	if set == nil || set.changed != changed {
		set = s.rebuild(changed)
	}
	_, ok := set.ids[id]
	return ok
}

// rebuild reads the cache's entries; changed, read before them, marks the set stale at the next change.
func (s *servedIDs) rebuild(changed <-chan struct{}) *idSet {
	s.mu.Lock()
	defer s.mu.Unlock()
	if set := s.snap.Load(); set != nil && set.changed == changed {
		return set // another caller rebuilt it
	}
	entries := s.cache.Entries()
	set := &idSet{changed: changed, ids: make(map[string]struct{}, len(entries))}
	for _, e := range entries {
		set.ids[e.SPIFFEID.String()] = struct{}{}
	}
	s.snap.Store(set)
	return set
}
