package unix

import (
	"errors"
	"testing"
	"time"
)

func TestNameLookupsAreRememberedForTheirTTL(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	calls := 0
	name := "app"
	c := nameCache{
		lookup: func(id string) (string, error) {
			calls++
			if id != "1000" {
				return "", errors.New("no such user")
			}
			return name, nil
		},
		ttl: 30 * time.Second,
		now: func() time.Time { return now },
	}
	for range 3 {
		if got, err := c.get("1000"); got != "app" || err != nil {
			t.Fatalf("get = %q, %v", got, err)
		}
	}
	if calls != 1 {
		t.Errorf("looked up %d times within the TTL, want 1", calls)
	}
	// A failed lookup is remembered too, so an unknown uid does not cost a lookup per connection.
	for range 2 {
		if _, err := c.get("4242"); err == nil {
			t.Fatal("unknown uid resolved")
		}
	}
	if calls != 2 {
		t.Errorf("looked up %d times, want 2 (the failure remembered)", calls)
	}
	// A rename shows once the TTL has passed.
	name = "renamed"
	now = now.Add(31 * time.Second)
	if got, _ := c.get("1000"); got != "renamed" {
		t.Errorf("after the TTL got %q, want the new name", got)
	}
}
