package authz

import (
	"context"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// FuzzDecide checks that arbitrary requests never panic, and that with no
// grants and no custom policy nothing is allowed.
func FuzzDecide(f *testing.F) {
	f.Add("spiffe://example.org/ns/prod/sa/frontend", "spiffe://example.org/ns/prod/sa/payments", "GET", "/api/v1/users?x=1", "curl/8")
	f.Add("", "spiffe://example.org/a", "POST", "/pkg.Service/Method", "")
	f.Add("spiffe://example.org", "spiffe://td/*", "delete", "/../..//%2e%2e/a", "\x00")
	f.Add("spiffe://example.org/a/b/c/d/e/f/g/h", "spiffe://example.org/a/b", "", "", "x")
	e := newEngine(f, Config{})
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, caller, target, method, path, header string) {
		var in Input
		if caller != "" {
			id, err := spiffeid.FromString(caller)
			if err != nil {
				t.Skip()
			}
			in.Caller = id
		}
		id, err := spiffeid.FromString(target)
		if err != nil {
			t.Skip()
		}
		in.Target = id
		in.Method, in.Path = method, path
		in.Attributes = map[string]any{"request": map[string]any{"http": map[string]any{
			"method": method, "path": path, "headers": map[string]any{"user-agent": header, header: path},
		}}}
		d, err := e.Decide(ctx, in)
		if err != nil {
			t.Fatalf("Decide: %v", err)
		}
		if d.Allowed || d.PolicyAllowed {
			t.Fatalf("allowed without grants: %+v", d)
		}
		if len(d.Reasons) == 0 {
			t.Fatalf("denied without a reason: %+v", d)
		}
	})
}
