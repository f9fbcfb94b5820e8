package node_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/attestation/node"
)

func TestAgentID(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	id, err := node.AgentID(td, "join_token", "node1")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := id.String(), "spiffe://example.org/kith/agent/join_token/node1"; got != want {
		t.Errorf("AgentID() = %s, want %s", got, want)
	}
	if _, err := node.AgentID(td, "join_token", "a/b"); err == nil {
		t.Error("AgentID() of a name with a slash succeeded")
	}
	if _, err := node.AgentID(td, "", "n"); err == nil {
		t.Error("AgentID() without a method succeeded")
	}
}

func TestParseAgentID(t *testing.T) {
	type parsed struct {
		Method, Name string
		OK           bool
	}
	tests := []struct {
		name, id string
		want     parsed
	}{
		{name: "an agent id gives its method and node", id: "spiffe://example.org/kith/agent/join_token/node1", want: parsed{"join_token", "node1", true}},
		{name: "a workload id is not an agent id", id: "spiffe://example.org/ns/prod/sa/web"},
		{name: "the server is not an agent", id: "spiffe://example.org/kith/server"},
		{name: "an id without a node is not an agent id", id: "spiffe://example.org/kith/agent/join_token"},
		{name: "an id with more segments is not an agent id", id: "spiffe://example.org/kith/agent/join_token/a/b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, n, ok := node.ParseAgentID(spiffeid.RequireFromString(tt.id))
			if diff := cmp.Diff(tt.want, parsed{m, n, ok}); diff != "" {
				t.Errorf("ParseAgentID(%s) (-want +got):\n%s", tt.id, diff)
			}
		})
	}
}
