package ca

import (
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
)

type bundleSnapshot struct {
	b   *spiffebundle.Bundle
	seq uint64
}

// Bundle returns the trust bundle: the prepared, active and still-needed retired roots and JWT keys,
// with a refresh hint and a sequence number that grows with every change. The result is a copy.
func (c *CA) Bundle() *spiffebundle.Bundle {
	return c.state.Load().bundle.b.Clone()
}

// keepAfterRetire is how long a retired authority stays in the bundle; ok is false for authorities that
// are never published (intermediates).
func (c *CA) keepAfterRetire(kind AuthorityKind) (keep time.Duration, ok bool) {
	switch kind {
	case KindX509Root:
		return c.cfg.MaxX509SVIDTTL, true
	case KindJWT:
		return c.cfg.MaxJWTSVIDTTL, true
	}
	return 0, false
}

// published reports whether a is in the bundle at now.
func (c *CA) published(a *authority, now time.Time) bool {
	keep, ok := c.keepAfterRetire(a.Kind)
	switch {
	case !ok:
		return false
	case a.State != StateRetired:
		return true
	}
	return now.Before(a.RetiredAt.Add(keep))
}

// leftBundleAt is when retired authority a leaves (or left) the bundle; ok is false if it never does.
func (c *CA) leftBundleAt(a *authority) (t time.Time, ok bool) {
	keep, ok := c.keepAfterRetire(a.Kind)
	if !ok || a.State != StateRetired {
		return time.Time{}, false
	}
	return a.RetiredAt.Add(keep), true
}

// lastChange is the latest authority timestamp at now, counting the moments retired authorities left the
// bundle. Its Unix nanoseconds are the bundle's sequence number.
func (c *CA) lastChange(auths []*authority, now time.Time) time.Time {
	var last time.Time
	for _, a := range auths {
		for _, t := range []time.Time{a.CreatedAt, a.ActivatedAt, a.RetiredAt} {
			if t.After(last) {
				last = t
			}
		}
		if t, ok := c.leftBundleAt(a); ok && !t.After(now) && t.After(last) {
			last = t
		}
	}
	return last
}

func (c *CA) sequence(now time.Time) uint64 {
	last := c.lastChange(c.auths, now)
	if last.IsZero() {
		return 0
	}
	return uint64(last.UnixNano())
}

func (c *CA) refreshHint() time.Duration {
	return min(max(c.cfg.IntermediateTTL/10, time.Minute), time.Hour)
}

// buildBundle builds the bundle published at now from c.auths. c.mu must be held.
func (c *CA) buildBundle(now time.Time) bundleSnapshot {
	b := spiffebundle.New(c.td)
	for _, a := range c.auths {
		if !c.published(a, now) {
			continue
		}
		switch a.Kind {
		case KindX509Root:
			b.AddX509Authority(a.cert)
		case KindJWT:
			// The key ID is unique and the key non-nil, so this cannot fail.
			_ = b.AddJWTAuthority(a.ID, a.pub)
		}
	}
	seq := c.sequence(now)
	b.SetRefreshHint(c.refreshHint())
	b.SetSequenceNumber(seq)
	return bundleSnapshot{b: b, seq: seq}
}
