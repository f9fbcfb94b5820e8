// Package latency summarizes a set of measured durations (percentiles by the nearest-rank method).
package latency

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Summary of a sample of durations.
type Summary struct {
	N                       int
	Min, P50, P90, P99, Max time.Duration
	Mean                    time.Duration
}

// Summarize sorts a copy of d and computes its summary.
func Summarize(d []time.Duration) Summary {
	if len(d) == 0 {
		return Summary{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	var sum time.Duration
	for _, x := range s {
		sum += x
	}
	return Summary{N: len(s), Min: s[0], P50: rank(s, 50), P90: rank(s, 90), P99: rank(s, 99), Max: s[len(s)-1], Mean: sum / time.Duration(len(s))}
}

// rank is the nearest-rank percentile: the smallest value with at least p % of the sample at or below it.
func rank(s []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(i, 0)]
}

// String prints the summary in milliseconds.
func (s Summary) String() string {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }
	return fmt.Sprintf("n=%d p50=%s ms p90=%s ms p99=%s ms min=%s ms max=%s ms mean=%s ms",
		s.N, ms(s.P50), ms(s.P90), ms(s.P99), ms(s.Min), ms(s.Max), ms(s.Mean))
}
