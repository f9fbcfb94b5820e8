package authz

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Mode says what happens when the policy denies a request to a target.
type Mode string

const (
	// ModeEnforce denies the request. It is the mode of every target without one.
	ModeEnforce Mode = "enforce"
	// ModeAudit logs and counts the denial but lets the request through.
	ModeAudit Mode = "audit"
)

// Grant says that Caller may call Target with the given methods and paths
// until ExpiresAt.
//
// Caller and Target are SPIFFE IDs ("spiffe://example.org/ns/prod/sa/payments")
// or ID prefixes ending in "/*" that match every ID below them
// ("spiffe://example.org/ns/dev/*" matches "spiffe://example.org/ns/dev/sa/x"
// but neither "spiffe://example.org/ns/dev" nor "spiffe://example.org/ns/devil/x";
// "spiffe://example.org/*" matches every ID of the trust domain).
//
// Paths are patterns over the request path (without query): a trailing "/*"
// matches everything below ("/api/*" matches "/api/", "/api/v1" and
// "/api/v1/users" but not "/api"); a "*" elsewhere matches any run of
// characters within one segment ("/api/*/users" matches "/api/v1/users");
// every other character matches itself. gRPC methods are paths
// ("/pkg.Service/*", "/pkg.Service/Method") called with POST.
type Grant struct {
	ID        string
	Caller    string    // SPIFFE ID or prefix ending in "/*"
	Target    string    // SPIFFE ID or prefix ending in "/*"
	Methods   []string  // HTTP methods, upper-case; empty means any
	Paths     []string  // path patterns; empty means any
	ExpiresAt time.Time // zero means never
	Reason    string
	CreatedBy string
	CreatedAt time.Time
	Source    string // "cli" or "git:<commit sha>"
}

var httpMethods = []string{"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}

// Validate reports what is wrong with g, if anything.
func (g Grant) Validate() error {
	var errs []error
	if g.ID == "" {
		errs = append(errs, errors.New("id is empty"))
	}
	if err := validatePattern(g.Caller); err != nil {
		errs = append(errs, fmt.Errorf("caller: %w", err))
	}
	if err := validatePattern(g.Target); err != nil {
		errs = append(errs, fmt.Errorf("target: %w", err))
	}
	for _, m := range g.Methods {
		if !slices.Contains(httpMethods, m) {
			if slices.Contains(httpMethods, strings.ToUpper(m)) {
				errs = append(errs, fmt.Errorf("method %q must be upper-case (%s)", m, strings.ToUpper(m)))
			} else {
				errs = append(errs, fmt.Errorf("method %q is not an HTTP method (one of %s; gRPC uses POST)", m, strings.Join(httpMethods, ", ")))
			}
		}
	}
	for _, p := range g.Paths {
		if err := validatePath(p); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		if g.ID != "" {
			return fmt.Errorf("invalid grant %s: %w", g.ID, err)
		}
		return fmt.Errorf("invalid grant: %w", err)
	}
	return nil
}

// validatePattern checks a caller or target: a SPIFFE ID or an ID followed by "/*".
func validatePattern(s string) error {
	if s == "" {
		return errors.New("empty; want a SPIFFE ID or a prefix such as spiffe://example.org/ns/dev/*")
	}
	id := strings.TrimSuffix(s, "/*")
	if strings.Contains(id, "*") {
		return fmt.Errorf("%q: a wildcard is only allowed as a trailing /* (as in spiffe://example.org/ns/dev/*)", s)
	}
	if _, err := spiffeid.FromString(id); err != nil {
		return fmt.Errorf("%q is not a SPIFFE ID or ID prefix: %w", s, err)
	}
	return nil
}

func validatePath(p string) error {
	switch {
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("path %q must start with /", p)
	case strings.ContainsAny(p, "?#"):
		return fmt.Errorf("path %q must not contain a query or fragment", p)
	case strings.ContainsAny(p, "[]{}\\"):
		return fmt.Errorf("path %q: only * is special in a path pattern; [ ] { } \\ are not allowed", p)
	case strings.Contains(p, "**"):
		return fmt.Errorf("path %q: use a trailing /* to match everything below a path, not **", p)
	}
	return nil
}

// pathPattern is a compiled path pattern as stored for the built-in policy:
// exactly one of "exact", "prefix" or "glob" (for glob.match with "/" as
// the delimiter).
func pathPattern(p string) map[string]any {
	body, trailing := strings.CutSuffix(p, "/*")
	switch {
	case !strings.Contains(p, "*"):
		return map[string]any{"exact": p}
	case trailing && !strings.Contains(body, "*"):
		return map[string]any{"prefix": body + "/"}
	case trailing:
		return map[string]any{"glob": body + "/**"}
	default:
		return map[string]any{"glob": p}
	}
}

// storeValue is g's document under data.kith.grants.
func (g Grant) storeValue() map[string]any {
	methods := make([]any, len(g.Methods))
	for i, m := range g.Methods {
		methods[i] = m
	}
	paths := make([]any, len(g.Paths))
	for i, p := range g.Paths {
		paths[i] = pathPattern(p)
	}
	var exp int64
	if !g.ExpiresAt.IsZero() {
		exp = g.ExpiresAt.UnixNano()
	}
	return map[string]any{"methods": methods, "paths": paths, "expires_at": exp}
}

// describe renders what g allows: "CALLER → TARGET GET,POST /api/*".
func (g Grant) describe() string {
	methods := "any method"
	if len(g.Methods) > 0 {
		methods = strings.Join(g.Methods, ",")
	}
	paths := "any path"
	if len(g.Paths) > 0 {
		paths = strings.Join(g.Paths, ",")
	}
	return fmt.Sprintf("%s → %s %s %s", g.Caller, g.Target, methods, paths)
}

// matchKeys returns the grant keys that can match id: the ID itself, then
// "spiffe://td/*", "spiffe://td/a/*", and so on for each ancestor of its path.
// A zero ID has no keys.
func matchKeys(id spiffeid.ID) []string {
	if id.IsZero() {
		return nil
	}
	s := id.String()
	td := len("spiffe://") + len(id.TrustDomain().Name())
	keys := make([]string, 0, 1+strings.Count(s[td:], "/"))
	keys = append(keys, s)
	for i := td; i < len(s); i++ {
		if s[i] == '/' {
			keys = append(keys, s[:i]+"/*")
		}
	}
	return keys
}
