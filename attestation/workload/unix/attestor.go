package unix

import (
	"errors"
	"fmt"
	"log/slog"
	"os/user"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kithid/kith/attestation/peer"
	"github.com/kithid/kith/attestation/workload"
)

// ErrProcessChanged reports that the pid no longer belongs to the process that connected: the error
// [peer.ErrProcessChanged] of the peer credentials the attestor works from.
var ErrProcessChanged = peer.ErrProcessChanged

// Name is the name the attestor is registered under, for the agent's workload_attestors list.
const Name = "unix"

func init() {
	workload.Register(Name, func(o workload.Options) (workload.Attestor, error) {
		return New(Config{Logger: o.Logger}), nil
	})
}

var _ workload.Attestor = (*Attestor)(nil)

// Config configures an [Attestor]. Every field's zero value is usable.
type Config struct {
	ProcRoot string       // zero: "/proc"
	Logger   *slog.Logger // zero: discard
	// Lookups for user/group names; zero: os/user.LookupId / LookupGroupId. Results (and failures) are
	// remembered for NameTTL.
	LookupUser  func(uid string) (string, error)
	LookupGroup func(gid string) (string, error)
	NameTTL     time.Duration    // zero: 30 s
	Now         func() time.Time // zero: time.Now
}

// Attestor derives unix selectors for workloads from their peer credentials. It is safe for concurrent use.
type Attestor struct {
	procRoot  string
	log       *slog.Logger
	hashes    hashCache
	inflight  inflight      // hashes being computed
	hashSlots chan struct{} // bounds the executables read at once
	hashed    atomic.Int64  // executables hashed (cache misses), for tests
	users     nameCache
	groups    nameCache
}

// New returns an Attestor with the zero fields of cfg filled with defaults.
func New(cfg Config) *Attestor {
	a := &Attestor{procRoot: cfg.ProcRoot, log: cfg.Logger, hashes: hashCache{max: hashCacheSize}, hashSlots: make(chan struct{}, hashWorkers)}
	if a.procRoot == "" {
		a.procRoot = "/proc"
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	lookupUser, lookupGroup := cfg.LookupUser, cfg.LookupGroup
	if lookupUser == nil {
		lookupUser = func(uid string) (string, error) {
			u, err := user.LookupId(uid)
			if err != nil {
				return "", err
			}
			return u.Username, nil
		}
	}
	if lookupGroup == nil {
		lookupGroup = func(gid string) (string, error) {
			g, err := user.LookupGroupId(gid)
			if err != nil {
				return "", err
			}
			return g.Name, nil
		}
	}
	ttl, now := cfg.NameTTL, cfg.Now
	if ttl <= 0 {
		ttl = 30 * time.Second
	}
	if now == nil {
		now = time.Now
	}
	a.users = nameCache{lookup: lookupUser, ttl: ttl, now: now}
	a.groups = nameCache{lookup: lookupGroup, ttl: ttl, now: now}
	return a
}

// hashCacheSize bounds the number of executables whose hashes are remembered.
const hashCacheSize = 1024

// hashWorkers bounds the executables hashed at the same time.
const hashWorkers = 2

// inflight is the hashes being computed, so that connections asking for the same file wait for one read,
// and the uids whose file is being read.
type inflight struct {
	mu   sync.Mutex
	m    map[exeKey]*hashCall
	uids map[uint32]bool
}

type hashCall struct {
	done chan struct{}
	sum  string
	err  error
}

// join returns the call computing key, and whether the caller is the first and must compute it. A uid
// with another file being read gets an error instead.
func (f *inflight) join(key exeKey, uid uint32) (*hashCall, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.m[key]; ok {
		return c, false, nil
	}
	if f.uids[uid] {
		return nil, false, fmt.Errorf("another executable of uid %d is being hashed; this one will be on a later connection", uid)
	}
	if f.m == nil {
		f.m, f.uids = map[exeKey]*hashCall{}, map[uint32]bool{}
	}
	c := &hashCall{done: make(chan struct{})}
	f.m[key] = c
	f.uids[uid] = true
	return c, true, nil
}

// finish publishes c's result to the callers waiting for it.
func (f *inflight) finish(key exeKey, c *hashCall, uid uint32) {
	f.mu.Lock()
	delete(f.m, key)
	delete(f.uids, uid)
	f.mu.Unlock()
	close(c.done)
}

// exeKey identifies one version of one executable file, from the fstat of the opened file.
type exeKey struct {
	path             string
	dev, ino         uint64
	size             int64
	mtimeNs, ctimeNs int64
}

type hashCache struct {
	mu  sync.Mutex
	max int
	m   map[exeKey]string
}

func (c *hashCache) get(k exeKey) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[k]
	return v, ok
}

func (c *hashCache) put(k exeKey, sum string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[exeKey]string)
	}
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		for old := range c.m { // evict an arbitrary entry
			delete(c.m, old)
			break
		}
	}
	c.m[k] = sum
}

func (c *hashCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// nameCache remembers user or group name lookups (reading /etc/passwd or asking NSS on every connection
// costs more than the rest of attestation) for a while, so a renamed user is seen after at most ttl. An
// id without a name is remembered as long; another failure for at most a second.
type nameCache struct {
	lookup func(string) (string, error)
	ttl    time.Duration
	now    func() time.Time
	mu     sync.Mutex
	m      map[string]nameResult
}

type nameResult struct {
	name    string
	err     error
	expires time.Time
}

// nameCacheSize bounds the ids remembered.
const nameCacheSize = 4096

func (c *nameCache) get(id string) (string, error) {
	now := c.now()
	c.mu.Lock()
	r, ok := c.m[id]
	c.mu.Unlock()
	if ok && now.Before(r.expires) {
		return r.name, r.err
	}
	name, err := c.lookup(id)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= nameCacheSize {
		c.m = map[string]nameResult{}
	}
	ttl := c.ttl
	if err != nil && !unknownID(err) {
		// A failing name service (LDAP, sssd) is asked again soon: its outage should not outlast it.
		ttl = min(ttl, time.Second)
	}
	c.m[id] = nameResult{name: name, err: err, expires: now.Add(ttl)}
	return name, err
}

// unknownID reports whether a lookup failed because the user or group does not exist.
func unknownID(err error) bool {
	var u user.UnknownUserIdError
	var g user.UnknownGroupIdError
	return errors.As(err, &u) || errors.As(err, &g)
}
