package grant

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
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

// Validate reports whether m is a known mode.
func (m Mode) Validate() error {
	switch m {
	case ModeEnforce, ModeAudit:
		return nil
	}
	return fmt.Errorf("unknown mode %q; want %q or %q", m, ModeEnforce, ModeAudit)
}

// Grant says that Caller may call Target with the given methods and paths
// until ExpiresAt.
//
// Caller and Target are SPIFFE IDs ("spiffe://example.org/ns/prod/sa/payments")
// or ID prefixes ending in "/*" that match every ID below them
// ("spiffe://example.org/ns/dev/*" matches "spiffe://example.org/ns/dev/sa/x"
// but neither "spiffe://example.org/ns/dev" nor "spiffe://example.org/ns/devil/x";
// "spiffe://example.org/*" matches every ID of the trust domain). See [Covers].
//
// Paths are patterns over the request path (without query): a trailing "/*"
// matches everything below ("/api/*" matches "/api/", "/api/v1" and
// "/api/v1/users" but not "/api"); a "*" elsewhere matches any run of
// characters within one segment ("/api/*/users" matches "/api/v1/users");
// every other character matches itself. gRPC methods are paths
// ("/pkg.Service/*", "/pkg.Service/Method") called with POST. See [MatchPath].
//
// PathRegex are RE2 expressions anchored at the start of the path, as SMI's HTTPRouteGroup pathRegex is
// ("/api" matches "/api" and "/apis/x"; write "/api$" for the one path); a request path matches the grant
// when it matches one of Paths or one of PathRegex (neither given: any path). Headers must all match:
// each value is an RE2 expression anchored at the start of the header's value (name in lower case). Ports
// limit the grant to those destination ports. NotMethods, NotPaths and NotCallers except requests that
// would otherwise match (Istio's notMethods, notPaths, notPrincipals and notNamespaces).
//
// A grant with Deny set is a deny rule: a request it matches is denied whatever the other grants say, as
// Istio evaluates DENY before ALLOW. A deny rule's Caller may be "*": any caller, of any trust domain.
type Grant struct {
	ID         string
	Caller     string            // SPIFFE ID or prefix ending in "/*"; "*" in a deny rule
	Target     string            // SPIFFE ID or prefix ending in "/*"
	Methods    []string          // HTTP methods, upper-case; empty means any
	Paths      []string          // path patterns; empty (and no PathRegex) means any
	PathRegex  []string          `json:",omitempty"` // RE2, anchored at the start of the path
	Headers    map[string]string `json:",omitempty"` // lower-case header name -> RE2 anchored at the start of the value
	Ports      []uint32          `json:",omitempty"` // destination ports; empty means any
	NotMethods []string          `json:",omitempty"` // methods excepted
	NotPaths   []string          `json:",omitempty"` // path patterns excepted
	NotCallers []string          `json:",omitempty"` // caller patterns excepted
	Deny       bool              `json:",omitempty"` // a deny rule, not a grant
	ExpiresAt  time.Time         // zero means never
	Reason     string
	CreatedBy  string
	CreatedAt  time.Time
	Source     string // "cli", "git:<commit sha>", "k8s:<ns>/<name>", "smi:<ns>/<name>" or "istio:<ns>/<name>"
}

// Extended reports whether g has a condition beyond caller, target, methods, path patterns and expiry:
// a path regex, headers, ports or an exception. The engine checks those in Go, once per request, for the
// few grants the request's keys find.
func (g Grant) Extended() bool {
	return len(g.PathRegex) > 0 || len(g.Headers) > 0 || len(g.Ports) > 0 || len(g.NotMethods) > 0 ||
		len(g.NotPaths) > 0 || len(g.NotCallers) > 0
}

// AnyCaller is the caller of a deny rule that matches every caller, of any trust domain.
const AnyCaller = "*"

var httpMethods = []string{"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}

// HTTPMethods returns the methods a grant may name, upper-case and sorted.
func HTTPMethods() []string { return slices.Clone(httpMethods) }

// Limits on a grant, so that no grant stores (and pushes to agents) an unbounded value.
const (
	maxIDLength     = 2048 // bytes of a caller or target, as the SPIFFE specification bounds an ID
	MaxPaths        = 64   // path patterns per grant
	MaxPathLength   = 1024 // bytes of one path pattern
	MaxReasonLength = 1024 // bytes of the reason
	MaxHeaders      = 16   // header matches per grant
	MaxPorts        = 64   // ports per grant
)

// Validate reports what is wrong with g, if anything.
func (g Grant) Validate() error {
	var errs []error
	if g.ID == "" {
		errs = append(errs, errors.New("id is empty"))
	}
	if g.Caller == AnyCaller {
		if !g.Deny {
			errs = append(errs, errors.New(`caller: "*" (any caller of any trust domain) is only for deny rules; give a prefix such as spiffe://example.org/*`))
		}
	} else if err := validatePattern(g.Caller); err != nil {
		errs = append(errs, fmt.Errorf("caller: %w", err))
	}
	for _, c := range g.NotCallers {
		if err := validatePattern(c); err != nil {
			errs = append(errs, fmt.Errorf("not caller: %w", err))
		}
	}
	if err := validatePattern(g.Target); err != nil {
		errs = append(errs, fmt.Errorf("target: %w", err))
	}
	for _, m := range slices.Concat(g.Methods, g.NotMethods) {
		if !slices.Contains(httpMethods, m) {
			if slices.Contains(httpMethods, strings.ToUpper(m)) {
				errs = append(errs, fmt.Errorf("method %q must be upper-case (%s)", m, strings.ToUpper(m)))
			} else {
				errs = append(errs, fmt.Errorf("method %q is not an HTTP method (one of %s; gRPC uses POST)", m, strings.Join(httpMethods, ", ")))
			}
		}
	}
	if n := len(g.Paths) + len(g.PathRegex) + len(g.NotPaths); n > MaxPaths {
		errs = append(errs, fmt.Errorf("%d paths, path expressions and excepted paths, at most %d per grant", n, MaxPaths))
	}
	for _, p := range slices.Concat(g.Paths, g.NotPaths) {
		if len(p) > MaxPathLength {
			errs = append(errs, fmt.Errorf("a path of %d bytes, at most %d", len(p), MaxPathLength))
			continue
		}
		if err := validatePath(p); err != nil {
			errs = append(errs, err)
		}
	}
	for _, r := range g.PathRegex {
		if len(r) > MaxPathLength {
			errs = append(errs, fmt.Errorf("a path expression of %d bytes, at most %d", len(r), MaxPathLength))
		} else if _, err := CompileRegex(r); err != nil {
			errs = append(errs, fmt.Errorf("path expression: %w", err))
		}
	}
	if len(g.Headers) > MaxHeaders {
		errs = append(errs, fmt.Errorf("%d header matches, at most %d per grant", len(g.Headers), MaxHeaders))
	}
	for _, name := range slices.Sorted(maps.Keys(g.Headers)) {
		switch {
		case name == "" || strings.ToLower(name) != name || strings.ContainsAny(name, " \t\r\n:"):
			errs = append(errs, fmt.Errorf("header name %q: want a lower-case HTTP header name such as user-agent", name))
		case len(g.Headers[name]) > MaxPathLength:
			errs = append(errs, fmt.Errorf("header %s: an expression of %d bytes, at most %d", name, len(g.Headers[name]), MaxPathLength))
		default:
			if _, err := CompileRegex(g.Headers[name]); err != nil {
				errs = append(errs, fmt.Errorf("header %s: %w", name, err))
			}
		}
	}
	if len(g.Ports) > MaxPorts {
		errs = append(errs, fmt.Errorf("%d ports, at most %d per grant", len(g.Ports), MaxPorts))
	}
	for _, p := range g.Ports {
		if p == 0 || p > 65535 {
			errs = append(errs, fmt.Errorf("port %d: want 1 to 65535", p))
		}
	}
	if len(g.Methods) > len(httpMethods) {
		errs = append(errs, fmt.Errorf("%d methods, at most the %d HTTP methods", len(g.Methods), len(httpMethods)))
	}
	if len(g.Reason) > MaxReasonLength {
		errs = append(errs, fmt.Errorf("reason of %d bytes, at most %d", len(g.Reason), MaxReasonLength))
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
	if len(s) > maxIDLength {
		return fmt.Errorf("%d bytes: a SPIFFE ID has at most %d", len(s), maxIDLength)
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
	case strings.Contains(p, "//"):
		return fmt.Errorf("path %q can never match: requests are matched with repeated slashes merged", p)
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return fmt.Errorf("path %q can never match: requests are matched after . and .. segments are resolved", p)
		}
	}
	if n, err := NormalizePath(p); err != nil {
		return fmt.Errorf("path %q can never match: %w", p, err)
	} else if n != p {
		return fmt.Errorf("path %q can never match: requests are matched with letters, digits and - . _ ~ decoded and other percent-encodings upper-cased: write %q", p, n)
	}
	return nil
}

// CompileRegex compiles a grant's path or header expression (RE2) anchored at the start of what it
// matches, as SMI anchors pathRegex: "/api" matches "/api/v1"; "/api$" only "/api".
func CompileRegex(expr string) (*regexp.Regexp, error) {
	// Compiled alone first, so that an unbalanced expression such as "a)|(b" cannot escape the anchor.
	if _, err := regexp.Compile(expr); err != nil {
		return nil, fmt.Errorf("%q is not an RE2 expression: %w", expr, err)
	}
	return regexp.Compile(`^(?:` + expr + `)`)
}
