package adminapi

import (
	"context"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/internal/store"
)

// Feed signals committed store revisions (the store's Watch): one value held, coalescing; closed when the
// store closes.
type Feed interface {
	Watch() (<-chan int64, func())
}

// cacheTTL bounds how long a cached user or owner set is used even without a store change signalled: a
// safety net should a signal be missed.
const cacheTTL = 2 * time.Second

// cacheMax bounds each cache's size; past it the cache starts over.
const cacheMax = 10_000

// lookupCache keeps what the admin policy reads from the store for every call — the calling user, the
// target's owners — for as long as the store has not changed: any committed revision (a user disabled, an
// entry relabelled) drops everything, so a change takes effect as soon as the store's feed signals it.
type lookupCache struct {
	feed Feed
	now  func() time.Time
	once sync.Once
	gen  atomic.Uint64 // bumped on every revision the feed signals
	live atomic.Bool   // the feed is being followed

	mu     sync.Mutex
	users  map[string]cached[store.User]
	owners map[string]cached[*authz.AdminIdentity]
}

type cached[T any] struct {
	v   T
	gen uint64
	at  time.Time
}

// start follows the feed, once. Until it runs (and without a feed) nothing is cached.
func (c *lookupCache) start() {
	if c == nil || c.feed == nil {
		return
	}
	c.once.Do(func() {
		ch, _ := c.feed.Watch()
		c.live.Store(true)
		go func() {
			for range ch {
				c.gen.Add(1)
			}
			c.live.Store(false) // the store closed: read it every time
			c.gen.Add(1)
		}()
	})
}

func lookup[T any](c *lookupCache, m map[string]cached[T], key string) (T, bool) {
	var zero T
	if c == nil || !c.live.Load() {
		return zero, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := m[key]
	if !ok || e.gen != c.gen.Load() || c.now().Sub(e.at) > cacheTTL {
		return zero, false
	}
	return e.v, true
}

func keep[T any](c *lookupCache, m *map[string]cached[T], key string, v T, gen uint64) {
	if c == nil || !c.live.Load() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if *m == nil || len(*m) >= cacheMax {
		*m = map[string]cached[T]{}
	}
	(*m)[key] = cached[T]{v: v, gen: gen, at: c.now()}
}

// user returns the user name, from the cache while the store has not changed.
func (c *lookupCache) user(ctx context.Context, us UserStore, name string) (store.User, error) {
	c.start()
	if u, ok := lookup(c, c.users, name); ok {
		return cloneUser(u), nil
	}
	gen := c.gen.Load() // read before the store: a change during the read leaves the value stale-marked
	u, err := us.GetUser(ctx, name)
	if err != nil {
		return store.User{}, err
	}
	keep(c, &c.users, name, cloneUser(u), gen)
	return u, nil
}

func cloneUser(u store.User) store.User {
	u.Labels, u.Roles = maps.Clone(u.Labels), slices.Clone(u.Roles)
	return u
}

// identity returns the admin policy's view of id, from the cache while the store has not changed.
func (c *lookupCache) identity(ctx context.Context, id string, read func(context.Context, string) (*authz.AdminIdentity, error)) (*authz.AdminIdentity, error) {
	c.start()
	if v, ok := lookup(c, c.owners, id); ok {
		return cloneIdentity(v), nil
	}
	gen := c.gen.Load()
	v, err := read(ctx, id)
	if err != nil {
		return nil, err
	}
	keep(c, &c.owners, id, cloneIdentity(v), gen)
	return v, nil
}

func cloneIdentity(v *authz.AdminIdentity) *authz.AdminIdentity {
	cp := *v
	cp.Owners, cp.OwnerTeams = slices.Clone(v.Owners), slices.Clone(v.OwnerTeams)
	return &cp
}
