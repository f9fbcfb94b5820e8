package syncer

import (
	"testing"
	"time"
)

// The reconnect wait grows with the backoff but never passes the cap, jitter included, and is spread
// below the cap so that agents that lost the server together do not return in step. (The wait was the
// backoff plus up to half again: 45 s with the old 30 s cap, so a revoke made after an outage reached the
// agent up to 45 s later.)
func TestRetryWaitIsJitteredAndNeverPassesTheCap(t *testing.T) {
	const max = 5 * time.Second
	tests := []struct {
		name     string
		backoff  time.Duration
		min, max time.Duration
	}{
		{"the first wait", 100 * time.Millisecond, 100 * time.Millisecond, 150 * time.Millisecond},
		{"a wait below the cap", 2 * time.Second, 2 * time.Second, 3 * time.Second},
		{"a wait whose jitter would pass the cap", 4 * time.Second, 4 * time.Second, max},
		{"a backoff at the cap", max, 4 * time.Second, max},
		{"a backoff far past the cap", time.Minute, 4 * time.Second, max},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen := map[time.Duration]bool{}
			for range 1000 {
				d := retryWait(tt.backoff, max)
				if d < tt.min || d > tt.max {
					t.Fatalf("retryWait(%s, %s) = %s, want within [%s, %s]", tt.backoff, max, d, tt.min, tt.max)
				}
				seen[d] = true
			}
			if len(seen) < 100 {
				t.Errorf("retryWait(%s, %s): %d distinct waits in 1,000, want jitter", tt.backoff, max, len(seen))
			}
		})
	}
}
