package grant

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

// HTTPMethods returns the methods a grant may name, upper-case and sorted.
func HTTPMethods() []string { return slices.Clone(httpMethods) }

// Limits on a grant, so that no grant stores (and pushes to agents) an unbounded value.
const (
	maxIDLength     = 2048 // bytes of a caller or target, as the SPIFFE specification bounds an ID
	MaxPaths        = 64   // path patterns per grant
	MaxPathLength   = 1024 // bytes of one path pattern
	MaxReasonLength = 1024 // bytes of the reason
)

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
	if len(g.Paths) > MaxPaths {
		errs = append(errs, fmt.Errorf("%d paths, at most %d per grant", len(g.Paths), MaxPaths))
	}
	for _, p := range g.Paths {
		if len(p) > MaxPathLength {
			errs = append(errs, fmt.Errorf("a path of %d bytes, at most %d", len(p), MaxPathLength))
			continue
		}
		if err := validatePath(p); err != nil {
			errs = append(errs, err)
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
