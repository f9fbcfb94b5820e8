package latency

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSummarize(t *testing.T) {
	tests := []struct {
		name string
		in   []time.Duration
		want Summary
	}{
		{"an empty sample summarizes to zero", nil, Summary{}},
		{"one value is every percentile", []time.Duration{5}, Summary{N: 1, Min: 5, P50: 5, P90: 5, P99: 5, Max: 5, Mean: 5}},
		{"a hundred values give nearest-rank percentiles", seq(100), Summary{N: 100, Min: 1, P50: 50, P90: 90, P99: 99, Max: 100, Mean: 50}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Summarize(tt.in)); diff != "" {
				t.Errorf("Summarize (-want +got):\n%s", diff)
			}
		})
	}
}

// seq is n, n-1, ..., 1 (unsorted on purpose).
func seq(n int) []time.Duration {
	var s []time.Duration
	for i := n; i >= 1; i-- {
		s = append(s, time.Duration(i))
	}
	return s
}
