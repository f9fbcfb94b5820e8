package unix

import (
	"errors"
	"log/slog"
	"os/user"
	"sync"
	"sync/atomic"
)

// ErrProcessChanged reports that the pid no longer belongs to the process that connected.
var ErrProcessChanged = errors.New("workload process exited or was replaced during attestation")

// Config configures an [Attestor]. Every field's zero value is usable.
type Config struct {
	ProcRoot string       // zero: "/proc"
	Logger   *slog.Logger // zero: discard
	// Lookups for user/group names; zero: os/user.LookupId / LookupGroupId
	LookupUser  func(uid string) (string, error)
	LookupGroup func(gid string) (string, error)
}

// Attestor derives unix selectors for workloads from their peer credentials. It is safe for concurrent use.
type Attestor struct {
	procRoot    string
	log         *slog.Logger
	lookupUser  func(string) (string, error)
	lookupGroup func(string) (string, error)
	hashes      hashCache
	hashed      atomic.Int64 // executables hashed (cache misses), for tests
}

// New returns an Attestor with the zero fields of cfg filled with defaults.
func New(cfg Config) *Attestor {
	a := &Attestor{
		procRoot:    cfg.ProcRoot,
		log:         cfg.Logger,
		lookupUser:  cfg.LookupUser,
		lookupGroup: cfg.LookupGroup,
		hashes:      hashCache{max: hashCacheSize},
	}
	if a.procRoot == "" {
		a.procRoot = "/proc"
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.lookupUser == nil {
		a.lookupUser = func(uid string) (string, error) {
			u, err := user.LookupId(uid)
			if err != nil {
				return "", err
			}
			return u.Username, nil
		}
	}
	if a.lookupGroup == nil {
		a.lookupGroup = func(gid string) (string, error) {
			g, err := user.LookupGroupId(gid)
			if err != nil {
				return "", err
			}
			return g.Name, nil
		}
	}
	return a
}

// hashCacheSize bounds the number of executables whose hashes are remembered.
const hashCacheSize = 1024

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
