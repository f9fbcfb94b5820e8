package grant

import (
	"path"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Covers reports whether the caller or target pattern covers q, a SPIFFE ID or another pattern: they are
// equal, or pattern ends in "*" and q, without its own trailing "*", starts with what comes before it.
//
// For a valid pattern and an ID this is how a grant matches: "spiffe://example.org/ns/dev/*" covers
// "spiffe://example.org/ns/dev/sa/x" but neither "spiffe://example.org/ns/dev" nor
// "spiffe://example.org/ns/devil/x", and an ID covers only itself. For two patterns it says whether the
// first covers every ID the second does ("spiffe://example.org/*" covers "spiffe://example.org/ns/dev/*").
// [Keys] lists the same patterns the other way round, for index lookups.
func Covers(pattern, q string) bool {
	if pattern == q {
		return true
	}
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(strings.TrimSuffix(q, "*"), prefix)
	}
	return false
}

// Keys returns the caller or target patterns that cover id: the ID itself, then "spiffe://td/*",
// "spiffe://td/a/*", and so on for each ancestor of its path, at most maxSlashes of them (a caller that
// knows no pattern has more "/" in its path can stop there). A zero ID has no keys.
func Keys(id spiffeid.ID, maxSlashes int) []string {
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

// MatchPath reports whether the path pattern p matches the (cleaned) request path reqPath: a trailing "/*"
// matches everything below, a "*" elsewhere any run of characters within one segment.
func MatchPath(p, reqPath string) bool {
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
