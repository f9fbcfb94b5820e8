package agent

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the agent's Prometheus metrics, served by the agent's metrics listener when configured.
type metrics struct {
	reg       *prometheus.Registry
	sdsNACKs  *prometheus.CounterVec
	decisions *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		sdsNACKs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kith_sds_nack_total", Help: "SDS responses a proxy rejected (NACK), by proxy node id.",
		}, []string{"node"}),
	}
	m.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kith_authz_decisions_total", Help: "Authorization decisions on this agent, by target and outcome (allow, deny, audit_deny, error).",
	}, []string{"target", "outcome"})
	m.reg.MustRegister(m.sdsNACKs, m.decisions)
	return m
}

// Metrics returns the agent's metrics registry.
func (a *Agent) Metrics() *prometheus.Registry { return a.metrics.reg }
