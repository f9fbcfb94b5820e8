package agent

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/svid/cache"
)

const (
	signBatch       = 250
	signParallelism = 4
)

// svidManager makes sure every entry has a current X.509-SVID: new entries get one at once, and each is
// rotated at RotateAtPercent of its life ± 10 % jitter, well before it expires.
func (a *Agent) svidManager(ctx context.Context) error {
	rotateAt := map[*cache.SVID]time.Time{}
	signedRev := map[string]int64{} // entry ID → entry revision its SVID was made for
	retry := time.Duration(0)
	for {
		changed := a.cache.Changed()
		now := a.cfg.Now()
		due, next := a.dueEntries(now, rotateAt, signedRev)
		client := a.currentClient()
		if len(due) > 0 && client != nil {
			if err := a.signEntries(ctx, client, due, signedRev); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				retry = min(max(2*retry, 200*time.Millisecond), 10*time.Second)
				a.log.Warn("sign workload svids", "error", err, "entries", len(due), "retry_in", retry)
				next = now.Add(retry)
			} else {
				retry = 0
				continue
			}
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(next.Sub(now), 0)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-a.signal:
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// dueEntries lists entries needing an SVID now and the earliest future rotation time. rotateAt holds
// the rotation time of each SVID the agent has seen.
func (a *Agent) dueEntries(now time.Time, rotateAt map[*cache.SVID]time.Time, signedRev map[string]int64) ([]cache.Entry, time.Time) {
	svids := a.cache.SVIDs()
	var due []cache.Entry
	var next time.Time
	pct := float64(a.cfg.Config.RotateAtPercent) / 100
	live := make(map[*cache.SVID]bool, len(svids))
	for _, e := range a.cache.Entries() {
		s := svids[e.ID]
		if s == nil {
			due = append(due, e)
			continue
		}
		if rev, ok := signedRev[e.ID]; !ok {
			signedRev[e.ID] = e.Revision // restored from disk: keep until rotation
		} else if rev != e.Revision {
			due = append(due, e)
			continue
		}
		live[s] = true
		at, ok := rotateAt[s]
		if !ok {
			// Measured from when the agent first holds it (not NotBefore, which is backdated), so a short
			// TTL is not rotated at once; an SVID restored from disk rotates at half its remaining life.
			frac := pct * (0.9 + 0.2*rand.Float64())
			at = rotationTime(now, s.NotBefore, s.NotAfter, frac)
			rotateAt[s] = at
		}
		if !now.Before(at) {
			due = append(due, e)
			continue
		}
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	for s := range rotateAt {
		if !live[s] {
			delete(rotateAt, s)
		}
	}
	return due, next
}

// signEntries makes a key per entry and asks the server to sign the CSRs in batches.
func (a *Agent) signEntries(ctx context.Context, client agentv1.AgentServiceClient, entries []cache.Entry, signedRev map[string]int64) error {
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(signParallelism)
	for batch := range slices.Chunk(entries, signBatch) {
		g.Go(func() error {
			keys := make(map[string]*ecdsa.PrivateKey, len(batch))
			byID := make(map[string]cache.Entry, len(batch))
			req := &agentv1.SignX509SVIDsRequest{}
			for _, e := range batch {
				key, csr, err := ca.NewKeyAndCSR(e.SPIFFEID)
				if err != nil {
					return err
				}
				keys[e.ID], byID[e.ID] = key, e
				req.Requests = append(req.Requests, &agentv1.X509SVIDRequest{EntryId: e.ID, Csr: csr})
			}
			resp, err := client.SignX509SVIDs(gctx, req)
			if err != nil {
				return err
			}
			svids := make(map[string]*cache.SVID, len(batch))
			for _, r := range resp.GetResults() {
				e, ok := byID[r.GetEntryId()]
				if !ok {
					continue
				}
				if r.GetError() != "" {
					a.log.Warn("server refused an svid", "entry", r.GetEntryId(), "spiffe_id", e.SPIFFEID.String(), "error", r.GetError())
					continue
				}
				svid, err := cache.NewSVID(e.SPIFFEID, r.GetCertChain(), keys[e.ID])
				if err != nil {
					a.log.Warn("bad svid from server", "entry", r.GetEntryId(), "error", err)
					continue
				}
				svids[e.ID] = svid
			}
			a.cache.SetSVIDs(svids)
			mu.Lock()
			for id := range svids {
				signedRev[id] = byID[id].Revision
			}
			mu.Unlock()
			return nil
		})
	}
	return g.Wait()
}

// maxJWTSVIDs bounds the JWT-SVIDs the agent keeps: workloads choose audiences, so without a bound any
// of them could grow the agent without limit.
const maxJWTSVIDs = 4096

// jwtSweepEvery is how often, at most, inserting a token also drops the expired ones.
const jwtSweepEvery = time.Minute

// jwtCache mints JWT-SVIDs through the server and reuses each until half its life has passed, so a
// workload asking again (or asking while the server is briefly away) gets a valid token. It holds at
// most maxJWTSVIDs tokens: expired ones are swept, and when it is full the oldest is evicted.
type jwtCache struct {
	a         *Agent
	mu        sync.Mutex
	tokens    map[string]jwtToken
	seq       uint64    // insertion counter, for eviction order
	nextSweep time.Time // when inserting next drops expired tokens
}

type jwtToken struct {
	svid  *jwtsvid.SVID
	added uint64
}

func newJWTCache(a *Agent) *jwtCache { return &jwtCache{a: a, tokens: map[string]jwtToken{}} }

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
func (j *jwtCache) FetchJWTSVID(ctx context.Context, e cache.Entry, audience []string) (*jwtsvid.SVID, error) {
	if err := ca.CheckAudience(audience); err != nil {
		return nil, err
	}
	key := jwtKey(e, audience)
	now := j.a.cfg.Now()
	j.mu.Lock()
	cached := j.tokens[key].svid
	j.mu.Unlock()
	if cached != nil && halfLifeLeft(cached, now) {
		return cached, nil
	}
	client := j.a.currentClient()
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
func (j *jwtCache) put(key string, svid *jwtsvid.SVID, now time.Time) {
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
	j.tokens[key] = jwtToken{svid: svid, added: j.seq}
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

// rotationTime is when to replace a certificate first seen at now: after frac of its remaining life.
func rotationTime(now, notBefore, notAfter time.Time, frac float64) time.Time {
	start := now
	if notBefore.After(now) {
		start = notBefore
	}
	return start.Add(time.Duration(float64(notAfter.Sub(start)) * frac))
}
