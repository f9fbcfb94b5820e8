package ca

import (
	"context"
	"fmt"
	"time"
)

// Switching between a self-signed root and an upstream authority is a root rotation: the roots the CA
// moves to are published first, and sign (through a new intermediate) only once RootOverlap has passed,
// so that every workload holds them before it meets an SVID chained to them; the roots it leaves stay in
// the bundle while SVIDs signed under them are alive (MaxX509SVIDTTL after they are retired).
//
//   - self-signed → upstream: a CA whose active intermediate is signed by its own root starts with an
//     upstream configured. It publishes the upstream's roots at once (startSwitch, or the first Tick that
//     reaches the upstream), keeps signing with its own intermediate, and after RootOverlap (or when that
//     intermediate is due to be replaced, if sooner) activates an intermediate minted by the upstream and
//     retires its own root and intermediates (switchToUpstream).
//   - upstream → self-signed: a CA whose active intermediate was minted by an upstream starts without one.
//     It makes a root of its own and an intermediate under it, published and prepared (a root rotation,
//     startRootRotation), and switches to them after RootOverlap (switchRoot, which retires every root it
//     leaves), or sooner when the upstream's intermediate is due to be replaced: without the upstream the
//     CA cannot mint another.

// signingRoot is the root the active intermediate chains to.
func (c *CA) signingRoot(v view) *authority {
	for _, a := range c.auths {
		if a.ID == v.inter.ParentID && a.Kind == KindX509Root {
			return a
		}
	}
	return nil
}

// switchingToUpstream reports whether an upstream is configured and the CA still signs under its own root.
func (c *CA) switchingToUpstream(v view) bool {
	r := c.signingRoot(v)
	return c.cfg.Upstream != nil && r != nil && r.KeyID != ""
}

// switchingFromUpstream reports whether no upstream is configured and the CA still signs under an
// upstream's root.
func (c *CA) switchingFromUpstream(v view) bool {
	r := c.signingRoot(v)
	return c.cfg.Upstream == nil && r != nil && r.KeyID == ""
}

// upstreamSwitchAt is when a switch to the upstream makes its intermediate active: RootOverlap after the
// first of the upstream's roots now active was published, or when the CA's own intermediate is due to be
// replaced if that is sooner. ok is false while no upstream root is published yet.
func (c *CA) upstreamSwitchAt(v view) (t time.Time, ok bool) {
	for _, a := range c.auths {
		if a.Kind == KindX509Root && a.KeyID == "" && a.State == StateActive && (!ok || a.CreatedAt.Before(t)) {
			t, ok = a.CreatedAt, true
		}
	}
	if !ok {
		return time.Time{}, false
	}
	return minTime(t.Add(c.cfg.RootOverlap), activateAt(v.inter)), true
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// startSwitch begins a switch the configuration asks for (see above). c.mu must be held.
func (c *CA) startSwitch(ctx context.Context) error {
	v := c.view()
	switch {
	case c.switchingToUpstream(v):
		if _, ok := c.upstreamSwitchAt(v); ok {
			return nil // under way
		}
		c.log.Warn("ca: switching from the self-signed root to the upstream authority: its roots are published now, and sign once the root overlap has passed",
			"upstream", c.cfg.UpstreamName, "root_overlap", c.cfg.RootOverlap)
		if err := c.refreshUpstreamRoots(ctx); err != nil {
			// Tick retries; the CA signs under its own root meanwhile.
			c.log.Error("ca: switching to the upstream authority: its roots could not be read; retrying", "error", err)
		}
		return nil
	case c.switchingFromUpstream(v):
		if v.nextRoot != nil {
			return nil // under way
		}
		c.log.Warn("ca: no upstream authority is configured any more: switching to a root of the ca's own, published now and signing once the root overlap has passed",
			"root_overlap", c.cfg.RootOverlap)
		if err := c.startRootRotation(ctx, c.now(), "system"); err != nil {
			return fmt.Errorf("switch from the upstream authority to a root of the ca's own: %w", err)
		}
	}
	return nil
}

// switchToUpstream activates an intermediate minted by the upstream for this server; the leader does it for
// every server and retires the CA's own roots. c.mu must be held.
func (c *CA) switchToUpstream(ctx context.Context, now time.Time, v view) error {
	ch := c.newChange(now)
	owners := []string{c.owner}
	if c.leader() {
		owners = c.owners()
	}
	if err := ch.rehome(ctx, owners, func(a *authority) bool { return !c.isOwn(a.ParentID) }, c.upstream); err != nil {
		return ch.abort(ctx, fmt.Errorf("upstream authority: %w", err))
	}
	if c.leader() {
		for _, a := range c.auths {
			if a.Kind == KindX509Root && a.KeyID != "" && a.State != StateRetired {
				ch.retire(a)
			}
		}
	}
	return c.commit(ctx, ch, "system", "ca.switch.upstream")
}

// isOwn reports whether authority id is a root of the CA's own.
func (c *CA) isOwn(id string) bool {
	for _, a := range c.auths {
		if a.ID == id {
			return a.KeyID != ""
		}
	}
	return false
}
