// Package cache holds what a node agent serves: the registration entries it was given, the X.509-SVIDs
// it holds for them, and the trust bundle; and it tells subscribers (Workload API and SDS streams) when
// the identities visible to their selectors change.
package cache

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/attestation"
)

// Entry is a registration entry as the agent sees it.
type Entry struct {
	ID        string
	SPIFFEID  spiffeid.ID
	Selectors []attestation.Selector
	X509TTL   time.Duration
	JWTTTL    time.Duration
	DNSNames  []string
	Labels    map[string]string
	Revision  int64
	// FederatesWith are the other trust domains whose bundles the entry's workloads also receive.
	FederatesWith []spiffeid.TrustDomain
}

// Identity is an entry with the SVID the agent holds for it. Both are shared and must not be modified.
type Identity struct {
	Entry *Entry
	SVID  *SVID
}

// Update is what a subscriber sees: its identities (only those with an SVID, ordered by SPIFFE ID then
// entry ID) and the bundles. Updates are shared between subscribers and must not be modified.
type Update struct {
	Identities []Identity
	Bundle     *spiffebundle.Bundle // the agent's own trust domain
	// Federated are the bundles of the other trust domains the identities' entries federate with (and that
	// the agent has a bundle for); nil when none.
	Federated map[spiffeid.TrustDomain]*spiffebundle.Bundle
	// Seq increases with every change the subscriber is told about.
	Seq uint64

	memoMu sync.Mutex
	memo   map[any]any
}

// Memo returns what build made from this update under key, calling build only the first time: what is
// derived from an update (an encoded response) is made once and shared by every stream that sees it.
// Concurrent callers with the same update wait for the first one.
func (u *Update) Memo(key any, build func() any) any {
	u.memoMu.Lock()
	defer u.memoMu.Unlock()
	if v, ok := u.memo[key]; ok {
		return v
	}
	v := build()
	if u.memo == nil {
		u.memo = map[any]any{}
	}
	u.memo[key] = v
	return v
}

// Bundles returns the own and federated bundles together.
func (u *Update) Bundles() []*spiffebundle.Bundle {
	var out []*spiffebundle.Bundle
	if u.Bundle != nil {
		out = append(out, u.Bundle)
	}
	for _, b := range u.Federated {
		out = append(out, b)
	}
	return out
}

// Cache is safe for concurrent use.
type Cache struct {
	mu       sync.RWMutex
	entries  map[string]*Entry // never modified once stored: views share them
	svids    map[string]*SVID
	bySel    map[attestation.Selector]map[string]struct{}
	bundle   *spiffebundle.Bundle
	fed      map[spiffeid.TrustDomain]*spiffebundle.Bundle // every federated bundle the server sent
	revision int64
	seq      uint64
	groups   map[string]*group  // by selector-set key
	recent   map[string]*Update // views of groups that lost their last subscriber, until the next change
	changed  chan struct{}      // closed and replaced on every change, for Wait
}

// group is the subscribers that share one selector set; their view is computed once.
type group struct {
	selectors []attestation.Selector
	set       attestation.Set
	subs      map[*Subscription]struct{}
	last      *Update
}

// New returns an empty cache.
func New() *Cache {
	return &Cache{
		entries: map[string]*Entry{},
		svids:   map[string]*SVID{},
		bySel:   map[attestation.Selector]map[string]struct{}{},
		groups:  map[string]*group{},
		recent:  map[string]*Update{},
		changed: make(chan struct{}),
	}
}

// maxRecent bounds the views kept for selector sets without subscribers.
const maxRecent = 256

// Subscription delivers Updates for one selector set. The channel holds at most one update: a slow
// reader sees the newest one.
type Subscription struct {
	c   *Cache
	key string
	ch  chan *Update
}

// Updates returns the channel of updates. The current view is delivered at once on Subscribe.
func (s *Subscription) Updates() <-chan *Update { return s.ch }

// Finish ends the subscription.
func (s *Subscription) Finish() {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if g := s.c.groups[s.key]; g != nil {
		delete(g.subs, s)
		if len(g.subs) == 0 {
			delete(s.c.groups, s.key)
			// A workload that connects again (a fresh connection per fetch) gets the same view and
			// what was derived from it, unless something changed in between.
			if len(s.c.recent) >= maxRecent {
				clear(s.c.recent)
			}
			s.c.recent[s.key] = g.last
		}
	}
}

func selectorKey(sels []attestation.Selector) string {
	var b strings.Builder
	for _, s := range sels {
		b.WriteString(s.String())
		b.WriteByte(0)
	}
	return b.String()
}

// Subscribe starts a subscription for a workload with the given selectors.
func (c *Cache) Subscribe(selectors []attestation.Selector) *Subscription {
	sels := attestation.Normalize(slices.Clone(selectors))
	key := selectorKey(sels)
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[key]
	if g == nil {
		g = &group{selectors: sels, set: attestation.NewSet(sels...), subs: map[*Subscription]struct{}{}}
		if g.last = c.recent[key]; g.last == nil {
			g.last = c.viewLocked(g)
		}
		delete(c.recent, key)
		c.groups[key] = g
	}
	s := &Subscription{c: c, key: key, ch: make(chan *Update, 1)}
	g.subs[s] = struct{}{}
	s.ch <- g.last
	return s
}

// Matching returns the current view for a selector set without subscribing.
func (c *Cache) Matching(selectors []attestation.Selector) *Update {
	sels := attestation.Normalize(slices.Clone(selectors))
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.viewLocked(&group{selectors: sels, set: attestation.NewSet(sels...)})
}

// MatchingEntries returns the entries whose selectors the workload has, with or without an SVID yet.
func (c *Cache) MatchingEntries(selectors []attestation.Selector) []Entry {
	sels := attestation.Normalize(slices.Clone(selectors))
	set := attestation.NewSet(sels...)
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []Entry
	c.eachMatchLocked(sels, set, func(e *Entry) { out = append(out, *e) })
	sortEntries(out)
	return out
}

// eachMatchLocked calls fn for each entry whose selectors are all in set; sels are set's selectors,
// without duplicates. An entry is looked up through the index of its first selector only, so each
// match is seen once without remembering which were seen (views are recomputed on every change, and
// one workload may match ten thousand entries).
func (c *Cache) eachMatchLocked(sels []attestation.Selector, set attestation.Set, fn func(*Entry)) {
	for _, s := range sels {
		for id := range c.bySel[s] {
			if e := c.entries[id]; e.Selectors[0] == s && set.ContainsAll(e.Selectors) {
				fn(e)
			}
		}
	}
}

func (c *Cache) viewLocked(g *group) *Update {
	u := &Update{Bundle: c.bundle, Seq: c.seq}
	if prev := g.last; prev != nil {
		u.Identities = make([]Identity, 0, len(prev.Identities))
	}
	c.eachMatchLocked(g.selectors, g.set, func(e *Entry) {
		if svid := c.svids[e.ID]; svid != nil {
			u.Identities = append(u.Identities, Identity{Entry: e, SVID: svid})
			for _, td := range e.FederatesWith {
				if b := c.fed[td]; b != nil {
					if u.Federated == nil {
						u.Federated = map[spiffeid.TrustDomain]*spiffebundle.Bundle{}
					}
					u.Federated[td] = b
				}
			}
		}
	})
	slices.SortFunc(u.Identities, func(a, b Identity) int { return compareEntries(a.Entry, b.Entry) })
	return u
}

func compareEntries(a, b *Entry) int {
	if c := strings.Compare(a.SPIFFEID.String(), b.SPIFFEID.String()); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

func sortEntries(es []Entry) {
	slices.SortFunc(es, func(a, b Entry) int { return compareEntries(&a, &b) })
}

// sameView reports whether two views show the same identities and bundle.
func sameView(a, b *Update) bool {
	if a.Bundle != b.Bundle || len(a.Identities) != len(b.Identities) || len(a.Federated) != len(b.Federated) {
		return false
	}
	for td, x := range a.Federated {
		if b.Federated[td] != x {
			return false
		}
	}
	for i := range a.Identities {
		x, y := a.Identities[i], b.Identities[i]
		if x.SVID != y.SVID || x.Entry.ID != y.Entry.ID || x.Entry.Revision != y.Entry.Revision {
			return false
		}
	}
	return true
}

// notifyLocked recomputes every group's view and delivers it where it changed.
func (c *Cache) notifyLocked() {
	c.seq++
	clear(c.recent)
	close(c.changed)
	c.changed = make(chan struct{})
	for _, g := range c.groups {
		u := c.viewLocked(g)
		if sameView(u, g.last) {
			continue
		}
		g.last = u
		for s := range g.subs {
			select {
			case <-s.ch:
			default:
			}
			s.ch <- u
		}
	}
}

func (c *Cache) putLocked(e Entry) {
	if old, ok := c.entries[e.ID]; ok {
		c.unindexLocked(old)
	}
	p := new(Entry)
	*p = e
	c.entries[e.ID] = p
	for _, s := range e.Selectors {
		m := c.bySel[s]
		if m == nil {
			m = map[string]struct{}{}
			c.bySel[s] = m
		}
		m[e.ID] = struct{}{}
	}
}

func (c *Cache) unindexLocked(e *Entry) {
	for _, s := range e.Selectors {
		if m := c.bySel[s]; m != nil {
			delete(m, e.ID)
			if len(m) == 0 {
				delete(c.bySel, s)
			}
		}
	}
}

func (c *Cache) deleteLocked(id string) {
	if old, ok := c.entries[id]; ok {
		c.unindexLocked(old)
		delete(c.entries, id)
	}
	delete(c.svids, id)
}

// ReplaceEntries replaces every entry (a full snapshot) and drops SVIDs of entries that are gone or
// whose SPIFFE ID changed.
func (c *Cache) ReplaceEntries(entries []Entry, revision int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	keep := make(map[string]Entry, len(entries))
	for _, e := range entries {
		keep[e.ID] = e
	}
	for id := range c.entries {
		if _, ok := keep[id]; !ok {
			c.deleteLocked(id)
		}
	}
	for _, e := range entries {
		c.applyLocked(e)
	}
	c.revision = revision
	c.notifyLocked()
}

// ApplyDelta adds or changes entries and removes deleted ones.
func (c *Cache) ApplyDelta(upserts []Entry, deleted []string, revision int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range deleted {
		c.deleteLocked(id)
	}
	for _, e := range upserts {
		c.applyLocked(e)
	}
	c.revision = max(c.revision, revision)
	c.notifyLocked()
}

func (c *Cache) applyLocked(e Entry) {
	// A changed SPIFFE ID invalidates the SVID at once; other changes (TTL, DNS names) keep serving the
	// old SVID until the manager replaces it.
	if old, ok := c.entries[e.ID]; ok && old.SPIFFEID != e.SPIFFEID {
		delete(c.svids, e.ID)
	}
	c.putLocked(e)
}

// SetSVIDs stores SVIDs by entry ID; SVIDs for entries the cache no longer has are ignored.
func (c *Cache) SetSVIDs(svids map[string]*SVID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, s := range svids {
		if e, ok := c.entries[id]; ok && s != nil && s.ID == e.SPIFFEID {
			c.svids[id] = s
		}
	}
	c.notifyLocked()
}

// SetBundle replaces the own trust domain's bundle.
func (c *Cache) SetBundle(b *spiffebundle.Bundle) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bundle = b
	c.notifyLocked()
}

// SetFederatedBundles replaces the federated trust domains' bundles. A bundle equal to the one held is kept,
// so that views whose bundles did not change are not sent again.
func (c *Cache) SetFederatedBundles(bs map[spiffeid.TrustDomain]*spiffebundle.Bundle) {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := make(map[spiffeid.TrustDomain]*spiffebundle.Bundle, len(bs))
	for td, b := range bs {
		if old := c.fed[td]; old != nil && old.Equal(b) {
			b = old
		}
		next[td] = b
	}
	c.fed = next
	c.notifyLocked()
}

// FederatedBundles returns every federated bundle held (shared: do not modify).
func (c *Cache) FederatedBundles() map[spiffeid.TrustDomain]*spiffebundle.Bundle {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return maps.Clone(c.fed)
}

// Bundle returns the own trust domain's bundle (nil until known).
func (c *Cache) Bundle() *spiffebundle.Bundle {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.bundle
}

// Ready reports whether the agent can serve: it has a bundle.
func (c *Cache) Ready() bool { return c.Bundle() != nil }

// Revision is the store revision of the last applied sync message.
func (c *Cache) Revision() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.revision
}

// Entries returns every entry, ordered.
func (c *Cache) Entries() []Entry {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]Entry, 0, len(c.entries))
	for _, e := range c.entries {
		out = append(out, *e)
	}
	sortEntries(out)
	return out
}

// Entry returns one entry.
func (c *Cache) Entry(id string) (Entry, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if e, ok := c.entries[id]; ok {
		return *e, true
	}
	return Entry{}, false
}

// SVIDs returns a copy of the SVIDs by entry ID.
func (c *Cache) SVIDs() map[string]*SVID {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[string]*SVID, len(c.svids))
	for id, s := range c.svids {
		out[id] = s
	}
	return out
}

// SVIDCount is the number of SVIDs held.
func (c *Cache) SVIDCount() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.svids)
}

// Changed returns a channel closed at the next change, for loops that react to changes.
func (c *Cache) Changed() <-chan struct{} {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.changed
}
