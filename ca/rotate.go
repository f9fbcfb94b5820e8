package ca

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// view is the CA's authorities by role. root, inter and jwt (the active ones) are always set.
type view struct {
	root, inter, jwt *authority
	nextRoot         *authority // prepared root, during a root rotation
	nextRootInter    *authority // prepared intermediate signed by nextRoot
	nextInter        *authority // prepared intermediate signed by the active root
	nextJWT          *authority // prepared JWT key
}

func (c *CA) view() view {
	var v view
	for _, a := range c.auths {
		switch {
		case a.State == StateActive && a.Kind == KindX509Root:
			v.root = a
		case a.State == StateActive && a.Kind == KindX509Intermediate:
			v.inter = a
		case a.State == StateActive && a.Kind == KindJWT:
			v.jwt = a
		case a.State == StatePrepared && a.Kind == KindX509Root:
			v.nextRoot = a
		case a.State == StatePrepared && a.Kind == KindJWT:
			v.nextJWT = a
		}
	}
	for _, a := range c.auths {
		if a.State != StatePrepared || a.Kind != KindX509Intermediate {
			continue
		}
		switch {
		case c.cfg.Upstream != nil || a.ParentID == v.root.ID:
			v.nextInter = a
		case v.nextRoot != nil && a.ParentID == v.nextRoot.ID:
			v.nextRootInter = a
		}
	}
	return v
}

// lifePoint is the moment a has lived num/den of its life.
func lifePoint(a *authority, num, den int64) time.Time {
	life := a.NotAfter.Sub(a.NotBefore)
	return a.NotBefore.Add(time.Duration(int64(life) / den * num))
}

func prepareAt(a *authority) time.Time  { return lifePoint(a, 1, 2) }
func activateAt(a *authority) time.Time { return lifePoint(a, 5, 6) }

// rootRotateAt is when an automatic root rotation starts: when less than max(RootOverlap+IntermediateTTL,
// 1/6 of the root's life) is left.
func (c *CA) rootRotateAt(root *authority) time.Time {
	left := max(c.cfg.RootOverlap+c.cfg.IntermediateTTL, root.NotAfter.Sub(root.NotBefore)/6)
	return root.NotAfter.Add(-left)
}

// rootSwitchAt is when a prepared root starts signing.
func (c *CA) rootSwitchAt(next *authority) time.Time { return next.CreatedAt.Add(c.cfg.RootOverlap) }

// rootSwitchFirst reports whether a root rotation in progress moves signing to the new root before the
// active intermediate is due to be replaced, so that no intermediate under the old root is needed.
func (c *CA) rootSwitchFirst(v view) bool {
	return v.nextRoot != nil && !c.rootSwitchAt(v.nextRoot).After(activateAt(v.inter))
}

// Tick applies the transitions due at the CA's current time: preparing and activating intermediates and
// JWT keys, starting and completing root rotations, and dropping retired authorities from the bundle.
// Each transition is persisted before it takes effect.
func (c *CA) Tick(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var rootsErr error
	if c.cfg.Upstream != nil {
		rootsErr = c.refreshUpstreamRoots(ctx)
	}
	// A few rounds let a CA that was down for a long time catch up; each round applies one transition.
	for range 8 {
		did, err := c.tickOnce(ctx, c.now())
		if err != nil {
			return fmt.Errorf("ca tick: %w", errors.Join(rootsErr, err))
		}
		if !did {
			break
		}
	}
	now := c.now()
	if c.sequence(now) != c.state.Load().bundle.seq {
		c.publish(now)
		c.notify()
	}
	if rootsErr != nil {
		return fmt.Errorf("ca tick: %w", rootsErr)
	}
	return nil
}

// refreshUpstreamRoots records the upstream authority's current roots (see UpstreamAuthority). c.mu must
// be held.
func (c *CA) refreshUpstreamRoots(ctx context.Context) error {
	roots, err := c.upstream.X509Roots(ctx)
	if err != nil {
		return fmt.Errorf("upstream authority: roots: %w", err)
	}
	ch := c.newChange(c.now())
	if err := ch.syncUpstreamRoots(roots); err != nil {
		return err
	}
	return c.commit(ctx, ch, "system", "ca.upstream.roots")
}

func (c *CA) tickOnce(ctx context.Context, now time.Time) (bool, error) {
	v := c.view()
	switch {
	case c.switchingToUpstream(v):
		if at, ok := c.upstreamSwitchAt(v); ok && !now.Before(at) {
			return true, c.switchToUpstream(ctx, now, v)
		}
		return c.tickJWT(ctx, now, v) // no intermediate of the ca's own any more, none of the upstream's yet
	case c.switchingFromUpstream(v):
		if v.nextRoot == nil {
			return true, c.startRootRotation(ctx, now, "system")
		}
		if !now.Before(minTime(c.rootSwitchAt(v.nextRoot), activateAt(v.inter))) {
			return true, c.switchRoot(ctx, now, v)
		}
		return c.tickJWT(ctx, now, v) // the upstream's intermediate cannot be replaced without the upstream
	}
	switch {
	case v.nextRoot != nil && (!now.Before(c.rootSwitchAt(v.nextRoot)) || !now.Before(v.root.NotAfter)):
		return true, c.switchRoot(ctx, now, v)
	case !now.Before(activateAt(v.inter)):
		ch := c.newChange(now)
		if err := ch.nextIntermediate(ctx, v); err != nil {
			return true, ch.abort(ctx, err)
		}
		return true, c.commit(ctx, ch, "system", "ca.activate")
	}
	if did, err := c.tickJWT(ctx, now, v); did {
		return did, err
	}
	switch {
	case v.nextInter == nil && !now.Before(prepareAt(v.inter)) && !c.rootSwitchFirst(v):
		ch := c.newChange(now)
		if _, err := ch.newIntermediate(ctx, c.minter(v.root)); err != nil {
			return true, ch.abort(ctx, err)
		}
		return true, c.commit(ctx, ch, "system", "ca.prepare")
	case c.cfg.Upstream == nil && v.nextRoot == nil && !now.Before(c.rootRotateAt(v.root)):
		return true, c.startRootRotation(ctx, now, "system")
	}
	return false, nil
}

// tickJWT applies the JWT key transitions due at now.
func (c *CA) tickJWT(ctx context.Context, now time.Time, v view) (bool, error) {
	switch {
	case !now.Before(activateAt(v.jwt)):
		ch := c.newChange(now)
		if err := ch.nextJWTKey(ctx, v); err != nil {
			return true, ch.abort(ctx, err)
		}
		return true, c.commit(ctx, ch, "system", "ca.activate")
	case v.nextJWT == nil && !now.Before(prepareAt(v.jwt)):
		ch := c.newChange(now)
		if _, err := ch.newJWT(ctx); err != nil {
			return true, ch.abort(ctx, err)
		}
		return true, c.commit(ctx, ch, "system", "ca.prepare")
	}
	return false, nil
}

// nextTransition is the earliest time after which Tick has something to do.
func (c *CA) nextTransition(now time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := c.view()
	times := []time.Time{activateAt(v.inter), activateAt(v.jwt)}
	if at, ok := c.upstreamSwitchAt(v); ok && c.switchingToUpstream(v) {
		times = append(times, at)
	}
	switch {
	case v.nextRoot != nil:
		times = append(times, c.rootSwitchAt(v.nextRoot))
	case c.cfg.Upstream == nil:
		times = append(times, c.rootRotateAt(v.root))
	}
	if v.nextInter == nil && !c.rootSwitchFirst(v) {
		times = append(times, prepareAt(v.inter))
	}
	if v.nextJWT == nil {
		times = append(times, prepareAt(v.jwt))
	}
	for _, a := range c.auths {
		if t, ok := c.leftBundleAt(a); ok && t.After(now) {
			times = append(times, t)
		}
	}
	next := times[0]
	for _, t := range times[1:] {
		if t.Before(next) {
			next = t
		}
	}
	return next
}

// nextIntermediate activates the prepared intermediate under the active root (preparing one if there is
// none) and retires the active one.
func (ch *change) nextIntermediate(ctx context.Context, v view) error {
	next := v.nextInter
	if next == nil {
		var err error
		if next, err = ch.newIntermediate(ctx, ch.c.minter(v.root)); err != nil {
			return err
		}
	}
	ch.activate(next)
	ch.retire(v.inter)
	return nil
}

// nextJWTKey activates the prepared JWT key (preparing one if there is none) and retires the active one.
func (ch *change) nextJWTKey(ctx context.Context, v view) error {
	next := v.nextJWT
	if next == nil {
		var err error
		if next, err = ch.newJWT(ctx); err != nil {
			return err
		}
	}
	ch.activate(next)
	ch.retire(v.jwt)
	return nil
}

// startRootRotation prepares a new root and an intermediate signed by it. c.mu must be held.
func (c *CA) startRootRotation(ctx context.Context, now time.Time, actor string) error {
	ch := c.newChange(now)
	root, err := ch.newRoot(ctx)
	if err != nil {
		return ch.abort(ctx, err)
	}
	if _, err := ch.newIntermediate(ctx, c.minter(root)); err != nil {
		return ch.abort(ctx, err)
	}
	return c.commit(ctx, ch, actor, "ca.rotate.root")
}

// switchRoot makes the prepared root and its intermediate active and retires the old root with every
// intermediate under it. c.mu must be held.
func (c *CA) switchRoot(ctx context.Context, now time.Time, v view) error {
	ch := c.newChange(now)
	root := ch.activate(v.nextRoot)
	inter := v.nextRootInter
	if inter == nil {
		var err error
		if inter, err = ch.newIntermediate(ctx, c.minter(root)); err != nil {
			return ch.abort(ctx, err)
		}
	}
	ch.activate(inter)
	for _, a := range c.auths { // the active root, and an upstream's other roots when switching from it
		if a.Kind == KindX509Root && a.State == StateActive && a.ID != root.ID {
			ch.retire(a)
		}
	}
	ch.retire(v.inter)
	if v.nextInter != nil {
		ch.retire(v.nextInter)
	}
	action := "ca.activate.root"
	if c.switchingFromUpstream(v) {
		action = "ca.switch.self_signed"
	}
	return c.commit(ctx, ch, "system", action)
}

// Rotate rotates now on behalf of actor. With root false it activates the next intermediate and JWT key
// (preparing them first if needed) and retires the current ones. With root true it starts a root
// rotation: a new root is published at once and signs (through a new intermediate) once RootOverlap has
// passed; Tick completes it. Starting a root rotation while one is in progress is an invalid request.
func (c *CA) Rotate(ctx context.Context, actor string, root bool) error {
	if actor == "" {
		actor = "system"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	v := c.view()
	if root {
		if c.cfg.Upstream != nil {
			return invalidf("rotate root: the roots belong to the upstream authority; rotate them there (kith publishes new upstream roots within a minute)")
		}
		if v.nextRoot != nil {
			return invalidf("rotate root: root %s is already being rotated in; it starts signing at %s",
				v.nextRoot.ID, c.rootSwitchAt(v.nextRoot).UTC().Format(time.RFC3339))
		}
		if err := c.startRootRotation(ctx, now, actor); err != nil {
			return fmt.Errorf("rotate root: %w", err)
		}
		return nil
	}
	ch := c.newChange(now)
	if err := ch.nextIntermediate(ctx, v); err != nil {
		return fmt.Errorf("rotate: %w", ch.abort(ctx, err))
	}
	if err := ch.nextJWTKey(ctx, v); err != nil {
		return fmt.Errorf("rotate: %w", ch.abort(ctx, err))
	}
	if err := c.commit(ctx, ch, actor, "ca.rotate"); err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	return nil
}

// Run calls Tick whenever a transition is due (and at least once a minute) until ctx is done. Tick
// errors are logged and retried; Run returns nil when ctx is done.
func (c *CA) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		if err := c.Tick(ctx); err != nil && ctx.Err() == nil {
			c.log.Error("ca rotation failed; retrying", "error", err)
		}
		now := c.now()
		wait := min(max(c.nextTransition(now).Sub(now), time.Second), time.Minute)
		if c.upstream != nil {
			// After a failed upstream call, retry with the backoff, not at the next transition (already due).
			if st := c.upstream.status(); st.Failures > 0 {
				wait = max(st.RetryAt.Sub(now), 10*time.Millisecond)
			}
		}
		timer.Reset(wait)
	}
}
