package ca

import (
	"context"
	"errors"
	"fmt"
	"slices"
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

// view returns the CA's authorities by role; the intermediates are this server's own (see Shared). inter is
// nil only for a server sharing the store that has no intermediate yet (ensureOwn makes one).
func (c *CA) view() view {
	var v view
	for _, a := range c.auths {
		switch {
		case a.Kind == KindX509Intermediate && a.Owner != c.owner:
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
		if a.State != StatePrepared || a.Kind != KindX509Intermediate || a.Owner != c.owner {
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
// Each transition is persisted before it takes effect. A CA sharing its store (Shared) reads the
// authorities again first, under the shared lock, and applies only what its role allows.
func (c *CA) Tick(ctx context.Context) error {
	return c.locked(ctx, func() error {
		if c.cfg.Shared != nil {
			if err := c.reload(ctx); err != nil {
				return fmt.Errorf("ca tick: %w", err)
			}
		}
		return c.tick(ctx)
	})
}

func (c *CA) tick(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.ensureOwn(ctx); err != nil {
		return fmt.Errorf("ca tick: %w", err)
	}
	var rootsErr error
	if c.cfg.Upstream != nil && c.leader() {
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

// ensureOwn makes this server's intermediate when it shares the store and has none (a new server, or one
// whose intermediate was retired by another): its prepared one under the signing root if it has one, or a
// new one. c.mu must be held.
func (c *CA) ensureOwn(ctx context.Context) error {
	v := c.view()
	if v.inter != nil {
		return nil
	}
	root := c.ownSigningRoot()
	if root == nil {
		return fmt.Errorf("%s has no intermediate and none can be made: the servers are switching from an upstream authority to a root of their own, and no upstream is configured here; start this server once the switch is done", ownerName(c.owner))
	}
	ch := c.newChange(c.now())
	if err := ch.rehome(ctx, []string{c.owner}, func(a *authority) bool { return a.ParentID == root.ID }, c.minter(root)); err != nil {
		return ch.abort(ctx, fmt.Errorf("make the intermediate of %s: %w", ownerName(c.owner), err))
	}
	c.log.Info("ca: this server had no intermediate of its own; made one", "server", c.owner)
	return c.commit(ctx, ch, "system", "ca.server.intermediate")
}

// ownSigningRoot is the root a new intermediate of this server goes under: with an upstream, the root its
// intermediates chain to (c.minter ignores it); without, the active root of the CA's own. Nil when the CA
// has no such root (an upstream's roots, and no upstream configured any more).
func (c *CA) ownSigningRoot() *authority {
	var found *authority
	for _, a := range c.auths {
		if a.Kind != KindX509Root || a.State != StateActive {
			continue
		}
		if c.cfg.Upstream != nil || a.KeyID != "" {
			found = a
		}
	}
	return found
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
	leader := c.leader()
	if leader && c.cfg.Shared != nil {
		if did, err := c.retireGoneIntermediates(ctx, now); did || err != nil {
			return true, err
		}
	}
	if c.cfg.Upstream != nil {
		// Switching from the CA's own root to the upstream: this server's intermediate, and for the
		// leader every server's still under an own root, move to the upstream when the first is due.
		if inters := c.underOwnRoot(leader); len(inters) > 0 {
			if at, ok := c.upstreamSwitchAtFor(inters); ok && !now.Before(at) {
				return true, c.switchToUpstream(ctx, now, inters)
			}
		}
	}
	switch {
	case c.switchingToUpstream(v):
		if !leader {
			return false, nil
		}
		return c.tickJWT(ctx, now, v) // no intermediate of the ca's own any more, none of the upstream's yet
	case c.switchingFromUpstream(v):
		if !leader {
			// Without the upstream no intermediate can be minted: the leader moves every server's to
			// the new root, by the time the first of them is due.
			return false, nil
		}
		if v.nextRoot == nil {
			return true, c.startRootRotation(ctx, now, "system")
		}
		if !now.Before(minTime(c.rootSwitchAt(v.nextRoot), c.firstActivateAt())) {
			return true, c.switchRoot(ctx, now, v)
		}
		return c.tickJWT(ctx, now, v) // the upstream's intermediate cannot be replaced without the upstream
	}
	switch {
	case leader && v.nextRoot != nil && (!now.Before(c.rootSwitchAt(v.nextRoot)) || !now.Before(v.root.NotAfter)):
		return true, c.switchRoot(ctx, now, v)
	case !now.Before(activateAt(v.inter)):
		ch := c.newChange(now)
		if err := ch.nextIntermediate(ctx, v); err != nil {
			return true, ch.abort(ctx, err)
		}
		return true, c.commit(ctx, ch, "system", "ca.activate")
	}
	if leader {
		if did, err := c.tickJWT(ctx, now, v); did {
			return did, err
		}
	}
	switch {
	case v.nextInter == nil && !now.Before(prepareAt(v.inter)) && !c.rootSwitchFirst(v):
		ch := c.newChange(now)
		if _, err := ch.newIntermediate(ctx, c.minter(v.root), c.owner); err != nil {
			return true, ch.abort(ctx, err)
		}
		return true, c.commit(ctx, ch, "system", "ca.prepare")
	case c.cfg.Shared != nil && c.cfg.Upstream == nil && v.nextRoot != nil && v.nextRootInter == nil:
		// Another server started a root rotation: prepare this server's intermediate under the new root.
		ch := c.newChange(now)
		if _, err := ch.newIntermediate(ctx, c.minter(v.nextRoot), c.owner); err != nil {
			return true, ch.abort(ctx, err)
		}
		return true, c.commit(ctx, ch, "system", "ca.prepare")
	case leader && c.cfg.Upstream == nil && v.nextRoot == nil && !now.Before(c.rootRotateAt(v.root)):
		return true, c.startRootRotation(ctx, now, "system")
	}
	return false, nil
}

// firstActivateAt is when the first of the active intermediates (of every server) is due to be replaced.
func (c *CA) firstActivateAt() time.Time {
	var first time.Time
	for _, a := range c.auths {
		if a.Kind == KindX509Intermediate && a.State == StateActive && (first.IsZero() || activateAt(a).Before(first)) {
			first = activateAt(a)
		}
	}
	return first
}

// retireGoneIntermediates retires the intermediates of other servers that have expired (active: the server
// is gone, or it would have replaced it) or can no longer become active (prepared under a retired root).
// c.mu must be held.
func (c *CA) retireGoneIntermediates(ctx context.Context, now time.Time) (bool, error) {
	byID := make(map[string]*authority, len(c.auths))
	for _, a := range c.auths {
		byID[a.ID] = a
	}
	ch := c.newChange(now)
	for _, a := range c.auths {
		if a.Kind != KindX509Intermediate || a.Owner == c.owner || a.State == StateRetired {
			continue
		}
		parent := byID[a.ParentID]
		if !now.Before(a.NotAfter) || a.State == StatePrepared && (parent == nil || parent.State == StateRetired) {
			ch.retire(a)
			c.log.Info("ca: retiring the intermediate of a server that is gone", "server", a.Owner, "intermediate", a.ID, "not_after", a.NotAfter)
		}
	}
	ch.retireUnusedOwnRoots()
	if len(ch.put) == 0 {
		return false, nil
	}
	return true, c.commit(ctx, ch, "system", "ca.retire.server")
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
	if v.inter == nil || c.cfg.Shared != nil && c.cfg.Upstream == nil && v.nextRoot != nil && v.nextRootInter == nil && !c.switchingFromUpstream(v) {
		return now // Tick has this server's intermediate to make
	}
	times := []time.Time{activateAt(v.inter), activateAt(v.jwt)}
	if inters := c.underOwnRoot(c.leader()); c.cfg.Upstream != nil && len(inters) > 0 {
		if at, ok := c.upstreamSwitchAtFor(inters); ok {
			times = append(times, at)
		}
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
		if a.Kind == KindX509Intermediate && a.Owner != c.owner && a.State == StateActive {
			times = append(times, a.NotAfter) // retireGoneIntermediates
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
		if next, err = ch.newIntermediate(ctx, ch.c.minter(v.root), ch.c.owner); err != nil {
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

// startRootRotation prepares a new root and an intermediate of this server signed by it (the other servers
// sharing the store prepare their own). c.mu must be held.
func (c *CA) startRootRotation(ctx context.Context, now time.Time, actor string) error {
	ch := c.newChange(now)
	root, err := ch.newRoot(ctx)
	if err != nil {
		return ch.abort(ctx, err)
	}
	if _, err := ch.newIntermediate(ctx, c.minter(root), c.owner); err != nil {
		return ch.abort(ctx, err)
	}
	return c.commit(ctx, ch, actor, "ca.rotate.root")
}

// switchRoot makes the prepared root active, retires the other roots, and moves every server's
// intermediate under the new root: the one it prepared there, or a new one. c.mu must be held.
func (c *CA) switchRoot(ctx context.Context, now time.Time, v view) error {
	ch := c.newChange(now)
	root := ch.activate(v.nextRoot)
	for _, a := range c.auths { // the active root, and an upstream's other roots when switching from it
		if a.Kind == KindX509Root && a.State == StateActive && a.ID != root.ID {
			ch.retire(a)
		}
	}
	if err := ch.rehome(ctx, c.owners(), func(a *authority) bool { return a.ParentID == root.ID }, c.minter(root)); err != nil {
		return ch.abort(ctx, err)
	}
	ch.retireOrphans()
	action := "ca.activate.root"
	if c.switchingFromUpstream(v) {
		action = "ca.switch.self_signed"
	}
	return c.commit(ctx, ch, "system", action)
}

// owners is this server and every other server with an active intermediate that has not expired (an
// expired one's server is gone: retireGoneIntermediates retires it). With a shared store the intermediate
// without an owner is a single server's from before the store was shared, and is left to expire too.
func (c *CA) owners() []string {
	out := []string{c.owner}
	now := c.now()
	for _, a := range c.auths {
		if c.liveIntermediate(a, now) && !slices.Contains(out, a.Owner) {
			out = append(out, a.Owner)
		}
	}
	return out
}

// liveIntermediate reports whether a is the active intermediate of this server or of another that is not
// gone (see owners).
func (c *CA) liveIntermediate(a *authority, now time.Time) bool {
	return a.Kind == KindX509Intermediate && a.State == StateActive &&
		(a.Owner == c.owner || now.Before(a.NotAfter) && (a.Owner != "" || c.cfg.Shared == nil))
}

// retireOrphans retires the intermediates (of servers that are gone) whose root the change retires.
func (ch *change) retireOrphans() {
	auths := ch.authorities()
	retired := map[string]bool{}
	for _, a := range auths {
		if a.Kind == KindX509Root && a.State == StateRetired {
			retired[a.ID] = true
		}
	}
	for _, a := range auths {
		if a.Kind == KindX509Intermediate && a.State != StateRetired && retired[a.ParentID] {
			ch.retire(a)
		}
	}
}

// rehome gives each of owners an active intermediate that fits (is under the root being moved to): the
// one it prepared, or a new one minted by up; every other intermediate of theirs that is not retired is
// retired.
func (ch *change) rehome(ctx context.Context, owners []string, fits func(*authority) bool, up UpstreamAuthority) error {
	for _, owner := range owners {
		var next *authority
		for _, a := range ch.authorities() {
			if a.Kind != KindX509Intermediate || a.Owner != owner || a.State == StateRetired {
				continue
			}
			if a.State == StatePrepared && next == nil && fits(a) {
				next = a
				continue
			}
			ch.retire(a)
		}
		if next == nil {
			var err error
			if next, err = ch.newIntermediate(ctx, up, owner); err != nil {
				if owner != ch.c.owner {
					err = fmt.Errorf("intermediate of %s: %w", ownerName(owner), err)
				}
				return err
			}
		}
		ch.activate(next)
	}
	return nil
}

// Rotate rotates now on behalf of actor. With root false it activates the next intermediate and JWT key
// (preparing them first if needed) and retires the current ones. With root true it starts a root
// rotation: a new root is published at once and signs (through a new intermediate) once RootOverlap has
// passed; Tick completes it. Starting a root rotation while one is in progress is an invalid request.
func (c *CA) Rotate(ctx context.Context, actor string, root bool) error {
	if actor == "" {
		actor = "system"
	}
	return c.locked(ctx, func() error {
		if c.cfg.Shared != nil {
			if err := c.reload(ctx); err != nil {
				return fmt.Errorf("rotate: %w", err)
			}
		}
		return c.rotate(ctx, actor, root)
	})
}

func (c *CA) rotate(ctx context.Context, actor string, root bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.ensureOwn(ctx); err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
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

// Kick makes Run tick now (a server that became the leader, or whose intermediate another server retired).
func (c *CA) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
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
		case <-c.kick:
			timer.Stop()
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
