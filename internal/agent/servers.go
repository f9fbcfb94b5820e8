package agent

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
)

// servers is the list of servers the agent may sync with (config `server`: several host:port, comma
// separated, and each name may resolve to several addresses). The agent talks to one at a time (its
// sync session and its unary calls go to the same one); it starts at a random one, so that agents spread
// over the servers, and moves to the next after a session that failed. The Sync stream resumes there from
// the revision the agent holds: every server reads the same store.
type servers struct {
	configured []string                                                 // host:port as configured
	lookup     func(ctx context.Context, host string) ([]string, error) // zero: net.DefaultResolver.LookupHost

	mu    sync.Mutex
	addrs []string // configured, with each name expanded to its addresses (resolved again at each failover)
	cur   int
}

// parseServers splits the config's server value: host:port[,host:port...].
func parseServers(s string) ([]string, error) {
	var out []string
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("server %q is not host:port", a)
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no server address")
	}
	return out, nil
}

func newServers(configured []string, lookup func(ctx context.Context, host string) ([]string, error)) *servers {
	if lookup == nil {
		lookup = net.DefaultResolver.LookupHost
	}
	s := &servers{configured: configured, lookup: lookup}
	s.resolve()
	s.cur = rand.N(len(s.addrs))
	return s
}

// resolve expands each configured name to its addresses; a name that does not resolve stays as it is (the
// dial will fail and the agent moves on). Addresses keep the configured order; a name's are sorted.
func (s *servers) resolve() {
	var out []string
	for _, hp := range s.configured {
		host, port, _ := net.SplitHostPort(hp)
		if net.ParseIP(host) != nil || host == "localhost" {
			out = append(out, hp)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ips, err := s.lookup(ctx, host)
		cancel()
		if err != nil || len(ips) <= 1 {
			out = append(out, hp) // one address: let gRPC resolve it as usual
			continue
		}
		slices.Sort(ips)
		for _, ip := range ips {
			out = append(out, net.JoinHostPort(ip, port))
		}
	}
	s.addrs = out
}

// current is the server the agent talks to now.
func (s *servers) current() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addrs[s.cur]
}

// failover moves to the next server (resolving the names again) and returns it.
func (s *servers) failover() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.configured) == 1 && len(s.addrs) == 1 {
		return s.addrs[0]
	}
	prev := s.addrs[s.cur]
	s.resolve()
	i := slices.Index(s.addrs, prev)
	s.cur = (max(i, 0) + 1) % len(s.addrs)
	if i < 0 {
		s.cur = rand.N(len(s.addrs))
	}
	return s.addrs[s.cur]
}

// all returns every address, the current one first.
func (s *servers) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append(slices.Clone(s.addrs[s.cur:]), s.addrs[:s.cur]...)
}
