// Package rotation keeps the node agent's SVIDs current: [Manager] makes sure every entry in the cache
// has an X.509-SVID, signed by the server in batches and rotated at a fraction of its life with jitter;
// [AgentSVID] holds the agent's own SVID and renews it at half-life.
package rotation

import "time"

// Time is when to replace a certificate first seen at now: after frac of its remaining life.
func Time(now, notBefore, notAfter time.Time, frac float64) time.Time {
	start := now
	if notBefore.After(now) {
		start = notBefore
	}
	return start.Add(time.Duration(float64(notAfter.Sub(start)) * frac))
}
