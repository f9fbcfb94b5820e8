package grant

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
)

// Request is what a grant's extended conditions (see [Grant.Extended]) look at.
type Request struct {
	Caller  string            // the caller's SPIFFE ID
	Method  string            // upper-case
	Path    string            // as NormalizePath returns it
	Headers map[string]string // lower-case names; may be nil
	Port    uint32            // destination port; 0 when unknown
}

// Compiled is a grant with its expressions compiled, once, for [Compiled.Check].
type Compiled struct {
	Grant
	pathRegex []*regexp.Regexp
	headers   []headerMatch
}

type headerMatch struct {
	name string
	re   *regexp.Regexp
}

// Compile validates g and compiles its expressions.
func Compile(g Grant) (*Compiled, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	c := &Compiled{Grant: g}
	for _, r := range g.PathRegex {
		re, err := CompileRegex(r)
		if err != nil {
			return nil, fmt.Errorf("grant %s: %w", g.ID, err)
		}
		c.pathRegex = append(c.pathRegex, re)
	}
	for _, name := range slices.Sorted(maps.Keys(g.Headers)) {
		re, err := CompileRegex(g.Headers[name])
		if err != nil {
			return nil, fmt.Errorf("grant %s: header %s: %w", g.ID, name, err)
		}
		c.headers = append(c.headers, headerMatch{name, re})
	}
	return c, nil
}

// Check says which extended condition of the grant r fails: "" when none does, else "path" (no path
// pattern or expression matches), "header NAME", "port", "excepted method", "excepted path" or
// "excepted caller". Caller, target, methods, path patterns without expressions and expiry are not
// checked here.
func (c *Compiled) Check(r Request) string {
	if len(c.pathRegex) > 0 && !slices.ContainsFunc(c.Paths, func(p string) bool { return MatchPath(p, r.Path) }) &&
		!slices.ContainsFunc(c.pathRegex, func(re *regexp.Regexp) bool { return re.MatchString(r.Path) }) {
		return "path"
	}
	for _, h := range c.headers {
		v, ok := r.Headers[h.name]
		if !ok || !h.re.MatchString(v) {
			return "header " + h.name
		}
	}
	if len(c.Ports) > 0 && !slices.Contains(c.Ports, r.Port) {
		return "port"
	}
	if slices.Contains(c.NotMethods, r.Method) {
		return "excepted method"
	}
	if slices.ContainsFunc(c.NotPaths, func(p string) bool { return MatchPath(p, r.Path) }) {
		return "excepted path"
	}
	if slices.ContainsFunc(c.NotCallers, func(p string) bool { return Covers(p, r.Caller) }) {
		return "excepted caller"
	}
	return ""
}
