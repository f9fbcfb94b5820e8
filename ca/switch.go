package ca

import (
	"context"
	"fmt"
	"slices"
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

// upstreamSwitchAt is when a switch to the upstream makes this server's intermediate active (see
// upstreamSwitchAtFor). ok is false while no upstream root is published yet.
func (c *CA) upstreamSwitchAt(v view) (t time.Time, ok bool) {
	return c.upstreamSwitchAtFor([]*authority{v.inter})
}

// upstreamSwitchAtFor is when a switch to the upstream replaces the active intermediates inters (under a
// root of the CA's own): RootOverlap after the first of the upstream's roots now active was published, or
// when the first of inters is due to be replaced if that is sooner. ok is false while no upstream root is
// published yet.
func (c *CA) upstreamSwitchAtFor(inters []*authority) (t time.Time, ok bool) {
	for _, a := range c.auths {
		if a.Kind == KindX509Root && a.KeyID == "" && a.State == StateActive && (!ok || a.CreatedAt.Before(t)) {
			t, ok = a.CreatedAt, true
		}
	}
	if !ok {
		return time.Time{}, false
	}
	t = t.Add(c.cfg.RootOverlap)
	for _, in := range inters {
		t = minTime(t, activateAt(in))
	}
	return t, true
}

// underOwnRoot returns the active intermediates that chain to a root of the CA's own: this server's only,
// unless the CA is the leader (it moves every server's to the upstream).
func (c *CA) underOwnRoot(leader bool) []*authority {
	var out []*authority
	now := c.now()
	for _, a := range c.auths {
		if c.liveIntermediate(a, now) && c.isOwn(a.ParentID) && (leader || a.Owner == c.owner) {
			out = append(out, a)
		}
	}
	return out
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

// switchToUpstream activates intermediates minted by the upstream for the servers whose intermediates
// inters are (this server's, or every server's for the leader), and retires the roots of the CA's own that
// no intermediate needs any more. c.mu must be held.
func (c *CA) switchToUpstream(ctx context.Context, now time.Time, inters []*authority) error {
	ch := c.newChange(now)
	var owners []string
	for _, in := range inters {
		if !slices.Contains(owners, in.Owner) {
			owners = append(owners, in.Owner)
		}
	}
	if err := ch.rehome(ctx, owners, func(a *authority) bool { return !c.isOwn(a.ParentID) }, c.upstream); err != nil {
		return ch.abort(ctx, err)
	}
	ch.retireUnusedOwnRoots()
	return c.commit(ctx, ch, "system", "ca.switch.upstream")
}

// retireUnusedOwnRoots retires, with an upstream configured, the roots of the CA's own that no intermediate
// (of any server) that is not retired chains to once the change is made.
func (ch *change) retireUnusedOwnRoots() {
	if ch.c.cfg.Upstream == nil {
		return
	}
	auths := ch.authorities()
	for _, r := range auths {
		if r.Kind != KindX509Root || r.KeyID == "" || r.State == StateRetired {
			continue
		}
		if !slices.ContainsFunc(auths, func(a *authority) bool {
			return a.Kind == KindX509Intermediate && a.State != StateRetired && a.ParentID == r.ID
		}) {
			ch.retire(r)
		}
	}
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
