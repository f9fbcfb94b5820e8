package unix

import (
	"errors"
	"os/user"
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
			switch id {
			case "1000":
				return name, nil
			case "5000":
				return "", errors.New("ldap server unreachable")
			}
			return "", user.UnknownUserIdError(4242)
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
	// An unknown uid is remembered too, so it does not cost a lookup per connection.
	for range 2 {
		if _, err := c.get("4242"); err == nil {
			t.Fatal("unknown uid resolved")
		}
	}
	if calls != 2 {
		t.Errorf("looked up %d times, want 2 (the failure remembered)", calls)
	}
	// A failing name service is asked again after a second, not after the whole TTL.
	for range 2 {
		if _, err := c.get("5000"); err == nil {
			t.Fatal("lookup failure hidden")
		}
	}
	if calls != 3 {
		t.Errorf("looked up %d times, want 3 (the failure remembered briefly)", calls)
	}
	now = now.Add(1500 * time.Millisecond)
	if _, err := c.get("5000"); err == nil || calls != 4 {
		t.Errorf("after a second: calls %d, error %v; want the failing service asked again", calls, err)
	}

	// A rename shows once the TTL has passed.
	name = "renamed"
	now = now.Add(31 * time.Second)
	if got, _ := c.get("1000"); got != "renamed" {
		t.Errorf("after the TTL got %q, want the new name", got)
	}
}
