package ca

import (
	"context"
	"fmt"
	"strings"
)

// Reload reads the authorities from the store again and takes them as the CA's own, for CAs that share
// one store (several servers on one database): one of them rotates (see Run) and the others call Reload
// when the store reports an authority change. Subscribers are told when the bundle or the signing
// authorities changed. The keys of the authorities that are not retired must be in the CA's key manager
// (a key manager the servers share).
func (c *CA) Reload(ctx context.Context) error {
	// Under the shared lock: a server that changes the authorities deletes the keys of those it retired
	// right after its commit, which a read of the authorities from before it would still ask for.
	if err := c.locked(ctx, func() error { return c.reload(ctx) }); err != nil {
		return fmt.Errorf("reload ca: %w", err)
	}
	c.mu.Lock()
	own := c.view().inter != nil
	c.mu.Unlock()
	if !own {
		c.Kick() // another server retired this one's intermediate: make a new one
	}
	return nil
}

func (c *CA) reload(ctx context.Context) error {
	stored, err := c.store.ListAuthorities(ctx)
	if err != nil {
		return fmt.Errorf("list authorities: %w", err)
	}
	if len(stored) == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	before := c.state.Load()
	if err := c.load(ctx, stored); err != nil {
		return err
	}
	after := c.state.Load()
	if before == nil || after.bundle.seq != before.bundle.seq || stateKey(before) != stateKey(after) {
		c.notify()
	}
	return nil
}

// stateKey names the authorities of st with their states.
func stateKey(st *state) string {
	var b strings.Builder
	for _, a := range st.auths {
		fmt.Fprintf(&b, "%s=%s/%d/%d;", a.ID, a.State, a.ActivatedAt.UnixNano(), a.RetiredAt.UnixNano())
	}
	return b.String()
}
