package agent

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/svid/cache"
)

// series lists the registry's series of the named metric as "label=value,... count", sorted.
func series(t *testing.T, m *metrics, name string) []string {
	t.Helper()
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, s := range f.GetMetric() {
			var labels []string
			for _, l := range s.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			out = append(out, fmt.Sprintf("%s %g", strings.Join(labels, ","), s.GetCounter().GetValue()))
		}
	}
	sort.Strings(out)
	return out
}

func TestDecisionMetricLabelsOnlyServedTargets(t *testing.T) {
	c := cache.New()
	payments := spiffeid.RequireFromString("spiffe://example.org/payments")
	c.ReplaceEntries([]cache.Entry{{ID: "e1", SPIFFEID: payments}}, 1)
	m := newMetrics(c)

	var wg sync.WaitGroup
	for w := range 10 {
		wg.Go(func() {
			for i := range 5000 {
				m.decision(fmt.Sprintf("spiffe://example.org/unknown/%d/%d", w, i), "deny")
			}
		})
	}
	wg.Wait()
	m.decision(payments.String(), "allow")
	m.decision("", "deny")
	m.decision(strings.Repeat("x", 1<<20), "deny")

	want := []string{
		"outcome=allow,target=spiffe://example.org/payments 1",
		"outcome=deny,target=other 50002",
	}
	if diff := cmp.Diff(want, series(t, m, "kith_authz_decisions_total")); diff != "" {
		t.Errorf("series (-want +got):\n%s", diff)
	}

	t.Run("a target becomes a label once the agent serves it", func(t *testing.T) {
		ledger := spiffeid.RequireFromString("spiffe://example.org/ledger")
		m.decision(ledger.String(), "deny")
		c.ApplyDelta([]cache.Entry{{ID: "e2", SPIFFEID: ledger}}, nil, 2)
		m.decision(ledger.String(), "deny")
		want := []string{
			"outcome=allow,target=spiffe://example.org/payments 1",
			"outcome=deny,target=other 50003",
			"outcome=deny,target=spiffe://example.org/ledger 1",
		}
		if diff := cmp.Diff(want, series(t, m, "kith_authz_decisions_total")); diff != "" {
			t.Errorf("series (-want +got):\n%s", diff)
		}
	})
	t.Run("a target the agent no longer serves is other again", func(t *testing.T) {
		c.ApplyDelta(nil, []string{"e1"}, 3)
		m.decision(payments.String(), "allow")
		want := []string{
			"outcome=allow,target=other 1",
			"outcome=allow,target=spiffe://example.org/payments 1",
			"outcome=deny,target=other 50003",
			"outcome=deny,target=spiffe://example.org/ledger 1",
		}
		if diff := cmp.Diff(want, series(t, m, "kith_authz_decisions_total")); diff != "" {
			t.Errorf("series (-want +got):\n%s", diff)
		}
	})
}

func TestSDSNACKsAreOneSeries(t *testing.T) {
	m := newMetrics(cache.New())
	for i := range 1000 {
		m.nack(fmt.Sprintf("node-%d", i))
	}
	if diff := cmp.Diff([]string{" 1000"}, series(t, m, "kith_sds_nack_total")); diff != "" {
		t.Errorf("series (-want +got):\n%s", diff)
	}
}
