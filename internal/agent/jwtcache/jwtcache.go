// Package jwtcache mints JWT-SVIDs through the server for the node agent's workloads and reuses each
// until half its life has passed, so a workload asking again (or asking while the server is briefly
// away) gets a valid token. It holds at most 4,096 tokens.
package jwtcache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/svid/cache"
)

// maxJWTSVIDs bounds the JWT-SVIDs the agent keeps: workloads choose audiences, so without a bound any
// of them could grow the agent without limit.
const maxJWTSVIDs = 4096

// jwtSweepEvery is how often, at most, inserting a token also drops the expired ones.
const jwtSweepEvery = time.Minute

// Minter asks the server for a JWT-SVID.
type Minter interface {
	MintJWTSVID(ctx context.Context, in *agentv1.MintJWTSVIDRequest, opts ...grpc.CallOption) (*agentv1.MintJWTSVIDResponse, error)
}

var _ Minter = agentv1.AgentServiceClient(nil)

// Config builds a Cache.
type Config struct {
	// Minter returns the client to mint with, or nil while the agent is not connected to the server (a
	// cached token still valid is then served); required.
	Minter func() Minter
	Now    func() time.Time // zero: time.Now
}

// Cache holds at most maxJWTSVIDs tokens: expired ones are swept, and when it is full the oldest is
// evicted.
type Cache struct {
	cfg       Config
	mu        sync.Mutex
	tokens    map[string]token
	seq       uint64    // insertion counter, for eviction order
	nextSweep time.Time // when inserting next drops expired tokens
}

type token struct {
	svid  *jwtsvid.SVID
	added uint64
}

// New makes an empty Cache.
func New(cfg Config) (*Cache, error) {
	if cfg.Minter == nil {
		return nil, errors.New("jwtcache: minter is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Cache{cfg: cfg, tokens: map[string]token{}}, nil
}

// jwtKey identifies a token by entry, SPIFFE ID and the set of audiences (order does not matter). Each
// part is length-prefixed, so no choice of audience strings can collide with another.
func jwtKey(e cache.Entry, audience []string) string {
	aud := slices.Clone(audience)
	sort.Strings(aud)
	var b strings.Builder
	put := func(s string) {
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(':')
		b.WriteString(s)
	}
	put(e.ID)
	put(e.SPIFFEID.String())
	for _, a := range aud {
		put(a)
	}
	return b.String()
}

// FetchJWTSVID returns a JWT-SVID for the entry and audience.
func (j *Cache) FetchJWTSVID(ctx context.Context, e cache.Entry, audience []string) (*jwtsvid.SVID, error) {
	if err := ca.CheckAudience(audience); err != nil {
		return nil, err
	}
	key := jwtKey(e, audience)
	now := j.cfg.Now()
	j.mu.Lock()
	cached := j.tokens[key].svid
	j.mu.Unlock()
	if cached != nil && halfLifeLeft(cached, now) {
		return cached, nil
	}
	client := j.cfg.Minter()
	if client == nil {
		if cached != nil && now.Before(cached.Expiry) {
			return cached, nil
		}
		return nil, errServerUnavailable
	}
	resp, err := client.MintJWTSVID(ctx, &agentv1.MintJWTSVIDRequest{EntryId: e.ID, Audience: audience})
	if err != nil {
		if cached != nil && now.Before(cached.Expiry) {
			return cached, nil
		}
		return nil, err
	}
	svid, err := jwtsvid.ParseInsecure(resp.GetToken(), audience)
	if err != nil {
		return nil, err
	}
	if svid.ID != e.SPIFFEID {
		return nil, fmt.Errorf("server returned a jwt-svid for %s, want %s", svid.ID, e.SPIFFEID)
	}
	j.put(key, svid, now)
	return svid, nil
}

// put stores a token, first making room: expired tokens go (at most every jwtSweepEvery, or when full),
// then the oldest while the cache is still full.
func (j *Cache) put(key string, svid *jwtsvid.SVID, now time.Time) {
	j.mu.Lock()
	defer j.mu.Unlock()
	_, replacing := j.tokens[key]
	full := !replacing && len(j.tokens) >= maxJWTSVIDs
	if full || !now.Before(j.nextSweep) {
		for k, t := range j.tokens {
			if !now.Before(t.svid.Expiry) {
				delete(j.tokens, k)
			}
		}
		j.nextSweep = now.Add(jwtSweepEvery)
	}
	for !replacing && len(j.tokens) >= maxJWTSVIDs {
		oldest, first := "", true
		var oldestSeq uint64
		for k, t := range j.tokens {
			if first || t.added < oldestSeq {
				oldest, oldestSeq, first = k, t.added, false
			}
		}
		delete(j.tokens, oldest)
	}
	j.seq++
	j.tokens[key] = token{svid: svid, added: j.seq}
}

func halfLifeLeft(s *jwtsvid.SVID, now time.Time) bool {
	iat, ok := s.Claims["iat"].(float64)
	if !ok {
		return false
	}
	issued := time.Unix(int64(iat), 0)
	return now.Before(issued.Add(s.Expiry.Sub(issued) / 2))
}

var errServerUnavailable = status.Error(codes.Unavailable, "the agent cannot reach the server to mint a JWT-SVID and holds no valid one for this audience")
