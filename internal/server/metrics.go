package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/kithid/kith/ca"
)

type metrics struct {
	reg     *prometheus.Registry
	issued  *prometheus.CounterVec
	latency *prometheus.HistogramVec
	// adminRefused counts admin socket connections refused by their peer's uid and gid.
	adminRefused prometheus.Counter
}

func newMetrics(authorities func() []ca.Authority, caStatus func() ca.Status, revision func(context.Context) (int64, error), now func() time.Time) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kith_svids_issued_total", Help: "SVIDs issued, by type (x509, jwt) and path (admin, agent).",
		}, []string{"type"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kith_svid_issuance_seconds", Help: "Time to validate a request and sign an SVID.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .05},
		}, []string{"type"}),
	}
	m.adminRefused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kith_admin_socket_refused_total", Help: "Admin socket connections refused: the peer's uid and gid are not in admin.allowed_uids/allowed_gids.",
	})
	m.reg.MustRegister(m.issued, m.latency, m.adminRefused,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&caCollector{authorities: authorities, now: now},
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "kith_ca_upstream_errors_total", Help: "Failed calls to the upstream authority (ca.upstream) since the server started; 0 without one.",
		}, func() float64 {
			if u := caStatus().Upstream; u != nil {
				return float64(u.Errors)
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kith_ca_intermediate_expiry_seconds", Help: "Seconds until the active signing intermediate (and so every X.509-SVID it signs) expires.",
		}, func() float64 { return caStatus().IntermediateNotAfter.Sub(now()).Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kith_store_revision", Help: "Current store revision."}, func() float64 {
			rev, err := revision(context.Background())
			if err != nil {
				return -1
			}
			return float64(rev)
		}),
	)
	return m
}

func (m *metrics) observeIssue(kind string, took time.Duration) {
	m.issued.WithLabelValues(kind).Inc()
	m.latency.WithLabelValues(kind).Observe(took.Seconds())
}

var caExpiryDesc = prometheus.NewDesc("kith_ca_expiry_seconds", "Seconds until each CA authority expires.", []string{"kind", "state", "id"}, nil)

type caCollector struct {
	authorities func() []ca.Authority
	now         func() time.Time
}

func (c *caCollector) Describe(ch chan<- *prometheus.Desc) { ch <- caExpiryDesc }

func (c *caCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.now()
	for _, a := range c.authorities() {
		if a.State == ca.StateRetired {
			continue
		}
		ch <- prometheus.MustNewConstMetric(caExpiryDesc, prometheus.GaugeValue, a.NotAfter.Sub(now).Seconds(), string(a.Kind), string(a.State), a.ID)
	}
}
