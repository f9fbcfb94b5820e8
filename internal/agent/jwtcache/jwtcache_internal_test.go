package jwtcache

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/catest"
	"github.com/kithid/kith/internal/agent/agenttest"
	"github.com/kithid/kith/internal/testutil"
	"github.com/kithid/kith/svid/cache"
)

// The cache's clock is settable (testutil.Clock); the fake server's CA keeps real time, since go-spiffe
// checks a token's exp and iat against it.

// mintServer is the fake server, counting the JWT-SVIDs it mints.
type mintServer struct{ *agenttest.Server }

func (m *mintServer) count() int { return m.Calls("MintJWTSVID") }

// newJWTFixture returns a JWT cache that talks to a fake server; entries are named by their SPIFFE
// ID so the fake knows whom to mint for.
func newJWTFixture(t *testing.T) (*Cache, *mintServer, *testutil.Clock) {
	t.Helper()
	clk := testutil.NewClock(time.Now())
	td := spiffeid.RequireTrustDomainFromString("example.org")
	srv := &mintServer{&agenttest.Server{CA: catest.NewCA(t, td)}}
	j, err := New(Config{Minter: func() Minter { return srv }, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return j, srv, clk
}

func jwtEntry(path string) cache.Entry {
	id := spiffeid.RequireFromString("spiffe://example.org" + path)
	return cache.Entry{ID: id.String(), SPIFFEID: id}
}

func (j *Cache) size() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.tokens)
}

func TestJWTKeysNeverCollide(t *testing.T) {
	web, api := jwtEntry("/web"), jwtEntry("/api")
	renamed := web
	renamed.SPIFFEID = api.SPIFFEID
	tests := []struct {
		name       string
		e1, e2     cache.Entry
		aud1, aud2 []string
		same       bool
	}{
		{"one audience holding a NUL differs from two audiences", web, web, []string{"admin\x00billing"}, []string{"billing", "admin"}, false},
		{"one audience holding a length prefix differs from two audiences", web, web, []string{"5:admin7:billing"}, []string{"admin", "billing"}, false},
		{"an audience differs from the same audience split in two", web, web, []string{"ab"}, []string{"a", "b"}, false},
		{"an entry whose SPIFFE ID changed gets a new key", web, renamed, []string{"db"}, []string{"db"}, false},
		{"entries differ", web, api, []string{"db"}, []string{"db"}, false},
		{"audience order does not matter", web, web, []string{"billing", "admin"}, []string{"admin", "billing"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k1, k2 := jwtKey(tt.e1, tt.aud1), jwtKey(tt.e2, tt.aud2)
			if got := k1 == k2; got != tt.same {
				t.Errorf("keys %q and %q: same = %v, want %v", k1, k2, got, tt.same)
			}
		})
	}
}

func TestJWTCacheGivesEachAudienceItsOwnToken(t *testing.T) {
	j, srv, _ := newJWTFixture(t)
	ctx := context.Background()
	web := jwtEntry("/web")

	first, err := j.FetchJWTSVID(ctx, web, []string{"billing", "admin"})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("the same audiences in another order reuse the token", func(t *testing.T) {
		again, err := j.FetchJWTSVID(ctx, web, []string{"admin", "billing"})
		if err != nil {
			t.Fatal(err)
		}
		if again != first || srv.count() != 1 {
			t.Errorf("got a new token (%d mints), want the cached one", srv.count())
		}
	})
	t.Run("an audience joining the others with a NUL is refused, not served the cached token", func(t *testing.T) {
		svid, err := j.FetchJWTSVID(ctx, web, []string{"admin\x00billing"})
		if !errors.Is(err, ca.ErrInvalidRequest) || svid != nil {
			t.Errorf("got %v, %v; want ErrInvalidRequest and no token", svid, err)
		}
	})
	t.Run("another audience gets its own token", func(t *testing.T) {
		svid, err := j.FetchJWTSVID(ctx, web, []string{"admin"})
		if err != nil {
			t.Fatal(err)
		}
		if svid == first {
			t.Fatal("got the token for [billing admin]")
		}
		if diff := cmp.Diff([]string{"admin"}, svid.Audience); diff != "" {
			t.Errorf("audience (-want +got):\n%s", diff)
		}
	})
}

func TestJWTCacheIsBounded(t *testing.T) {
	j, srv, clk := newJWTFixture(t)
	ctx := context.Background()
	web := jwtEntry("/web")
	aud := func(i int) []string { return []string{"aud-" + strconv.Itoa(i)} }

	for i := range maxJWTSVIDs + 100 {
		if _, err := j.FetchJWTSVID(ctx, web, aud(i)); err != nil {
			t.Fatalf("fetch %d: %v", i, err)
		}
		if n := j.size(); n > maxJWTSVIDs {
			t.Fatalf("after %d tokens the cache holds %d, want at most %d", i+1, n, maxJWTSVIDs)
		}
	}
	t.Run("a full cache evicted the oldest tokens", func(t *testing.T) {
		mints := srv.count()
		if _, err := j.FetchJWTSVID(ctx, web, aud(maxJWTSVIDs+99)); err != nil {
			t.Fatal(err)
		}
		if srv.count() != mints {
			t.Error("the newest token was not cached")
		}
		if _, err := j.FetchJWTSVID(ctx, web, aud(0)); err != nil {
			t.Fatal(err)
		}
		if srv.count() != mints+1 {
			t.Error("the oldest token was still cached")
		}
	})
	t.Run("expired tokens are swept", func(t *testing.T) {
		clk.Advance(time.Hour)
		if _, err := j.FetchJWTSVID(ctx, web, []string{"fresh"}); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(1, j.size()); diff != "" {
			t.Errorf("tokens held (-want +got):\n%s", diff)
		}
	})
	t.Run("invalid audiences are refused before the server is asked", func(t *testing.T) {
		mints := srv.count()
		for _, a := range [][]string{nil, {""}, {string(make([]byte, 2<<20))}, {"a\nb"}} {
			if _, err := j.FetchJWTSVID(ctx, web, a); !errors.Is(err, ca.ErrInvalidRequest) {
				t.Errorf("audience of %d values: error %v, want ErrInvalidRequest", len(a), err)
			}
		}
		if srv.count() != mints {
			t.Errorf("the server was asked %d times", srv.count()-mints)
		}
	})
}

func TestJWTCacheWhileNotConnected(t *testing.T) {
	clk := testutil.NewClock(time.Now())
	srv := &agenttest.Server{CA: catest.NewCA(t, spiffeid.RequireTrustDomainFromString("example.org"))}
	connected := true
	j, err := New(Config{Now: clk.Now, Minter: func() Minter {
		if !connected {
			return nil
		}
		return srv
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	web := jwtEntry("/web")
	held, err := j.FetchJWTSVID(ctx, web, []string{"db"})
	if err != nil {
		t.Fatal(err)
	}
	connected = false
	clk.Advance(4 * time.Minute) // past half its 5 min life: would be replaced if the server were there
	t.Run("a token still valid is served", func(t *testing.T) {
		got, err := j.FetchJWTSVID(ctx, web, []string{"db"})
		if err != nil || got != held {
			t.Errorf("got %v, %v; want the held token", got, err)
		}
	})
	t.Run("without one the error is Unavailable", func(t *testing.T) {
		_, err := j.FetchJWTSVID(ctx, web, []string{"cache"})
		if status.Code(err) != codes.Unavailable {
			t.Errorf("error %v, want Unavailable", err)
		}
	})
	t.Run("a failed mint falls back to the held token", func(t *testing.T) {
		connected = true
		srv.Fail("MintJWTSVID", errors.New("server unavailable"))
		got, err := j.FetchJWTSVID(ctx, web, []string{"db"})
		if err != nil || got != held {
			t.Errorf("got %v, %v; want the held token", got, err)
		}
	})
}
