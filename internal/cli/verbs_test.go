package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// kith token revoke takes an unused token out of use, and says what is wrong with one it cannot revoke.
func TestTokenRevoke(t *testing.T) {
	s := startServer(t, t.TempDir())
	var created struct {
		Token struct {
			ID string `json:"id"`
		} `json:"token"`
	}
	if err := json.Unmarshal([]byte(s.ok(t, "token", "create", "--name", "n1", "-o", "json")), &created); err != nil {
		t.Fatal(err)
	}
	id := created.Token.ID

	if diff := cmp.Diff("revoked "+id+"\n", s.ok(t, "token", "revoke", id)); diff != "" {
		t.Errorf("kith token revoke (-want +got):\n%s", diff)
	}
	if out := s.ok(t, "token", "list"); strings.Contains(out, id) {
		t.Errorf("kith token list still shows the revoked token %s:\n%s", id, out)
	}
	for _, tt := range []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"a revoked token is not found", []string{"token", "revoke", id}, 1, "revoke join token " + id + ": not found (see kith token list)"},
		{"a token named by its name instead of its id is refused", []string{"token", "revoke", "n1"}, 1, `token id "n1" is invalid: it is the hex ID from kith token list`},
		{"no token id is a usage error", []string{"token", "revoke"}, 2, "TOKEN-ID"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, errs, code := s.kith(t, tt.args...)
			if code != tt.wantCode || !strings.Contains(errs, tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, errs, tt.wantCode, tt.wantErr)
			}
		})
	}
}

// kith agents count prints the number of agents; ban and unban name the agent they could not find.
func TestAgentsCountBanUnban(t *testing.T) {
	s := startServer(t, t.TempDir())
	if diff := cmp.Diff("0\n", s.ok(t, "agents", "count")); diff != "" {
		t.Errorf("kith agents count (-want +got):\n%s", diff)
	}
	var got map[string]int
	if err := json.Unmarshal([]byte(s.ok(t, "agents", "count", "-o", "json")), &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]int{"count": 0}, got); diff != "" {
		t.Errorf("kith agents count -o json (-want +got):\n%s", diff)
	}
	node := "spiffe://example.org/kith/agent/join_token/nope"
	for _, tt := range []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"banning an unknown agent is not found", []string{"agents", "ban", node}, 1, "ban agent " + node + ": not found"},
		{"unbanning an unknown agent is not found", []string{"agents", "unban", node}, 1, "unban agent " + node + ": not found"},
		{"ban needs an agent id", []string{"agents", "ban"}, 2, "AGENT-ID"},
		{"count takes no arguments", []string{"agents", "count", "x"}, 2, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, errs, code := s.kith(t, tt.args...)
			if code != tt.wantCode || !strings.Contains(errs, tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, errs, tt.wantCode, tt.wantErr)
			}
		})
	}
}
