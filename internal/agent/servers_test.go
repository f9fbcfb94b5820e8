package agent

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseServers(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{in: "localhost:8081", want: []string{"localhost:8081"}},
		{in: "a:8081, b:8081,,c:9", want: []string{"a:8081", "b:8081", "c:9"}},
		{in: "a", wantErr: true},
		{in: " , ", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseServers(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseServers(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parseServers(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

// The agent visits every server in turn when each fails, expanding a name with several addresses, and
// starts at one of them at random.
func TestServersFailover(t *testing.T) {
	lookup := func(_ context.Context, host string) ([]string, error) {
		switch host {
		case "kith.svc":
			return []string{"10.0.0.2", "10.0.0.1"}, nil
		case "one.example":
			return []string{"10.0.1.1"}, nil
		}
		return nil, errors.New("no such host")
	}
	s := newServers([]string{"kith.svc:8081", "one.example:8081", "192.0.2.1:8081", "gone.example:8081"}, lookup)
	want := []string{"10.0.0.1:8081", "10.0.0.2:8081", "one.example:8081", "192.0.2.1:8081", "gone.example:8081"}
	if diff := cmp.Diff(want, s.addrs); diff != "" {
		t.Fatalf("addresses (-want +got):\n%s", diff)
	}
	seen := map[string]bool{s.current(): true}
	for range len(want) - 1 {
		seen[s.failover()] = true
	}
	if len(seen) != len(want) {
		t.Errorf("after %d failovers the agent tried %d of the %d servers: %v", len(want)-1, len(seen), len(want), seen)
	}
	starts := map[string]bool{}
	for range 50 {
		starts[newServers([]string{"a:1", "b:1", "c:1"}, lookup).current()] = true
	}
	if len(starts) < 2 {
		t.Errorf("50 agents all started at %v: they do not spread over the servers", starts)
	}
}

// parseServers takes the operator's server value: whatever it is, it either refuses it or returns only
// host:port addresses.
func FuzzParseServers(f *testing.F) {
	for _, s := range []string{"localhost:8081", "a:1,b:2", " , ", "[::1]:8081,x", "a:1,,", ":"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		addrs, err := parseServers(s)
		if err != nil {
			return
		}
		if len(addrs) == 0 {
			t.Fatalf("parseServers(%q) = no addresses and no error", s)
		}
		for _, a := range addrs {
			if _, _, err := net.SplitHostPort(a); err != nil {
				t.Fatalf("parseServers(%q) returned %q, not host:port", s, a)
			}
		}
	})
}
