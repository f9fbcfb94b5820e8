package grant

import (
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestKeys(t *testing.T) {
	tests := []struct {
		id   string
		max  int
		want []string
	}{
		{"spiffe://example.org/ns/dev/sa/x", 10, []string{"spiffe://example.org/ns/dev/sa/x", "spiffe://example.org/*", "spiffe://example.org/ns/*", "spiffe://example.org/ns/dev/*", "spiffe://example.org/ns/dev/sa/*"}},
		{"spiffe://example.org/ns/dev/sa/x", 2, []string{"spiffe://example.org/ns/dev/sa/x", "spiffe://example.org/*", "spiffe://example.org/ns/*"}},
		{"spiffe://example.org", 10, []string{"spiffe://example.org"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s has keys up to %d slashes", tt.id, tt.max), func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Keys(spiffeid.RequireFromString(tt.id), tt.max)); diff != "" {
				t.Errorf("Keys (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMatchPath(t *testing.T) {
	tests := []struct {
		pattern, path string
		want          bool
	}{
		{"/api/*", "/api/v1/users", true},
		{"/api/*", "/api/", true},
		{"/api/*", "/api", false},
		{"/api/*", "/admin", false},
		{"/api/*", "/apiv1", false},
		{"/*", "/", true},
		{"/*", "/anything/at/all", true},
		{"/pkg.Service/*", "/pkg.Service/Method", true},
		{"/pkg.Service/*", "/pkg.ServiceX/Method", false},
		{"/api/*/users", "/api/v1/users", true},
		{"/api/*/users", "/api/v1/v2/users", false},
		{"/exact", "/exact", true},
		{"/exact", "/exact/", false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s matches %s is %v", tt.pattern, tt.path, tt.want), func(t *testing.T) {
			if got := MatchPath(tt.pattern, tt.path); got != tt.want {
				t.Errorf("MatchPath = %v", got)
			}
		})
	}
}

// Covers replaced three copies: the engine's index keys (Keys), the admin API's list filter (which compares
// patterns with patterns, and with whatever a user typed) and the agent API's "is this target served here".
func TestCovers(t *testing.T) {
	tests := []struct {
		name       string
		pattern, q string
		want       bool
	}{
		// Pattern against ID: how grants match (engine, agent API).
		{"an ID covers itself", "spiffe://example.org/ns/dev/sa/x", "spiffe://example.org/ns/dev/sa/x", true},
		{"an ID does not cover another ID", "spiffe://example.org/ns/dev/sa/x", "spiffe://example.org/ns/dev/sa/y", false},
		{"an ID does not cover an ID below it", "spiffe://example.org/ns/dev", "spiffe://example.org/ns/dev/sa/x", false},
		{"a prefix covers an ID below it", "spiffe://example.org/ns/dev/*", "spiffe://example.org/ns/dev/sa/x", true},
		{"a prefix covers an ID one level below it", "spiffe://example.org/ns/dev/*", "spiffe://example.org/ns/dev/x", true},
		{"a prefix does not cover its own parent ID", "spiffe://example.org/ns/dev/*", "spiffe://example.org/ns/dev", false},
		{"a prefix does not cover a sibling that shares its letters", "spiffe://example.org/ns/dev/*", "spiffe://example.org/ns/devil/x", false},
		{"a trust domain prefix covers every ID in it", "spiffe://example.org/*", "spiffe://example.org/ns/dev/sa/x", true},
		{"a trust domain prefix does not cover another trust domain", "spiffe://example.org/*", "spiffe://example.org.evil/x", false},
		{"a trust domain prefix does not cover a longer trust domain name", "spiffe://example.org/*", "spiffe://example.orgx/x", false},
		// Pattern against pattern: the admin API lists grants that overlap a filter, in both directions.
		{"a prefix covers itself", "spiffe://example.org/ns/dev/*", "spiffe://example.org/ns/dev/*", true},
		{"a prefix covers a narrower prefix", "spiffe://example.org/ns/*", "spiffe://example.org/ns/dev/*", true},
		{"a prefix does not cover a wider prefix", "spiffe://example.org/ns/dev/*", "spiffe://example.org/ns/*", false},
		{"an ID does not cover a prefix below it", "spiffe://example.org/ns/dev", "spiffe://example.org/ns/dev/*", false},
		{"a trust domain prefix covers any prefix in it", "spiffe://example.org/*", "spiffe://example.org/ns/dev/*", true},
		// What a user may type as a list filter: a "*" without a "/" before it is a plain string prefix.
		{"a filter ending in a bare * is a string prefix", "spiffe://example.org/ns/d*", "spiffe://example.org/ns/dev/sa/x", true},
		{"an ID is covered by a filter that is a bare-* prefix of it", "spiffe://example.org/ns/dev/*", "spiffe://example.org/ns/dev/sa*", true},
		{"an empty pattern covers nothing", "", "spiffe://example.org/x", false},
		{"an empty pattern covers an empty string", "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Covers(tt.pattern, tt.q); got != tt.want {
				t.Errorf("Covers(%q, %q) = %v, want %v", tt.pattern, tt.q, got, tt.want)
			}
		})
	}
}

// For valid patterns and IDs, Covers and Keys are the same relation: the engine looks grants up by Keys, and
// the agent API decides by Covers which grants an agent needs, so they must agree.
func TestCoversAgreesWithKeys(t *testing.T) {
	ids := []string{
		"spiffe://example.org/x", "spiffe://example.org/ns/dev", "spiffe://example.org/ns/dev/sa/x",
		"spiffe://example.org/ns/devil/x", "spiffe://example.org.evil/ns/dev/sa/x", "spiffe://other.org/ns/dev/sa/x",
	}
	patterns := append([]string{
		"spiffe://example.org/*", "spiffe://example.org/ns/*", "spiffe://example.org/ns/dev/*",
		"spiffe://example.org/ns/dev/sa/*", "spiffe://example.org/ns/de/*", "spiffe://other.org/*",
	}, ids...)
	for _, p := range patterns {
		g := Grant{ID: "g", Caller: p, Target: p}
		if err := g.Validate(); err != nil {
			t.Fatalf("test pattern %s is not valid: %v", p, err)
		}
		for _, s := range ids {
			t.Run(fmt.Sprintf("%s and %s", p, s), func(t *testing.T) {
				id := spiffeid.RequireFromString(s)
				inKeys := slices.Contains(Keys(id, 100), p)
				if got := Covers(p, s); got != inKeys {
					t.Errorf("Covers = %v, but Keys(%s) contains the pattern: %v", got, s, inKeys)
				}
			})
		}
	}
}
