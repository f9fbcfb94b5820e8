package authz

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
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

// neverExpires is the expires_at of a grant without expiry.
const neverExpires = int64(math.MaxInt64)

// storeValue is g's document under data.kith.grants: methods and paths as
// objects keyed like input.kith.method_keys and input.kith.path_keys, and the
// patterns with a "*" inside a segment as globs for glob.match (a trailing
// "/*" becoming "/**"). Grants with the same methods, paths and expiry
// share one value, interned in values, which keeps the store small.
func (g Grant) storeValue(values map[string]ast.Value) ast.Value {
	exp := neverExpires
	if !g.ExpiresAt.IsZero() {
		exp = g.ExpiresAt.UnixNano()
	}
	key := fmt.Sprintf("%d %q %q", exp, g.Methods, g.Paths)
	if v, ok := values[key]; ok {
		return v
	}
	methods := ast.NewObject()
	for _, m := range g.Methods {
		methods.Insert(ast.StringTerm(m), ast.InternedTerm(true))
	}
	if len(g.Methods) == 0 {
		methods.Insert(ast.StringTerm("*"), ast.InternedTerm(true))
	}
	paths := ast.NewObject()
	var globs []*ast.Term
	for _, p := range g.Paths {
		if body, trailing := strings.CutSuffix(p, "/*"); strings.Contains(body, "*") {
			if trailing {
				body += "/**"
			}
			globs = append(globs, ast.StringTerm(body))
		} else {
			paths.Insert(ast.StringTerm(p), ast.InternedTerm(true))
		}
	}
	if len(g.Paths) == 0 {
		paths.Insert(ast.StringTerm("/*"), ast.InternedTerm(true))
	}
	v := ast.NewObject(
		ast.Item(ast.StringTerm("methods"), ast.NewTerm(methods)),
		ast.Item(ast.StringTerm("paths"), ast.NewTerm(paths)),
		ast.Item(ast.StringTerm("globs"), ast.ArrayTerm(globs...)),
		ast.Item(ast.StringTerm("expires_at"), ast.NumberTerm(json.Number(strconv.FormatInt(exp, 10)))),
	)
	values[key] = v
	return v
}

// state says why g does or does not allow a request: "ok", "expired",
// "method" or "path". It is the Go twin of the built-in policy's matching,
// used to explain denials.
func (g Grant) state(now time.Time, method, cleanedPath string) string {
	switch {
	case !g.ExpiresAt.IsZero() && !now.Before(g.ExpiresAt):
		return "expired"
	case len(g.Methods) > 0 && !slices.Contains(g.Methods, method):
		return "method"
	case len(g.Paths) > 0 && !slices.ContainsFunc(g.Paths, func(p string) bool { return pathMatches(p, cleanedPath) }):
		return "path"
	}
	return "ok"
}

// pathMatches reports whether the path pattern p matches the request path.
func pathMatches(p, reqPath string) bool {
	body, trailing := strings.CutSuffix(p, "/*")
	if !trailing {
		ok, _ := path.Match(p, reqPath)
		return ok
	}
	// Match body against as many leading segments of reqPath, then require
	// a "/" after them.
	n := strings.Count(body, "/")
	i := 0
	for seen := 0; i < len(reqPath); i++ {
		if reqPath[i] == '/' {
			if seen == n {
				break
			}
			seen++
		}
	}
	if i >= len(reqPath) {
		return false
	}
	ok, _ := path.Match(body, reqPath[:i])
	return ok
}

// depth is the number of "/" in a pattern: how many prefix keys of a
// request are needed to find it.
func depth(pattern string) int { return strings.Count(pattern, "/") }

// storedGrant is a grant held by the engine, with the reason a decision
// gives when it matches, built on its first match rather than per decision.
type storedGrant struct {
	Grant
	allows atomic.Pointer[string]
}

// allowsReason is "grant ID allows CALLER → TARGET METHODS PATHS".
func (g *storedGrant) allowsReason() string {
	if r := g.allows.Load(); r != nil {
		return *r
	}
	r := "grant " + g.ID + " allows " + g.describe()
	g.allows.Store(&r)
	return r
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

// idKeys returns the grant keys that can match id: the ID itself, then
// "spiffe://td/*", "spiffe://td/a/*", and so on for each ancestor of its
// path, at most maxSlashes of them (no grant prefix has more "/" in its
// path). A zero ID has no keys.
func idKeys(id spiffeid.ID, maxSlashes int) []string {
	if id.IsZero() {
		return nil
	}
	s := id.String()
	td := len("spiffe://") + len(id.TrustDomain().Name())
	keys := make([]string, 0, 1+min(maxSlashes, strings.Count(s[td:], "/")))
	keys = append(keys, s)
	for i, n := td, 0; i < len(s) && n < maxSlashes; i++ {
		if s[i] == '/' {
			keys = append(keys, s[:i]+"/*")
			n++
		}
	}
	return keys
}
