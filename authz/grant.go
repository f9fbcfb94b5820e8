package authz

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/kithid/kith/authz/grant"
)

// Grant and Mode are defined in package grant, which the store and the APIs use without OPA.
type (
	// Grant says that Caller may call Target with the given methods and paths until ExpiresAt; see
	// [grant.Grant].
	Grant = grant.Grant
	// Mode says what happens when the policy denies a request to a target; see [grant.Mode].
	Mode = grant.Mode
)

const (
	// ModeEnforce denies the request. It is the mode of every target without one.
	ModeEnforce = grant.ModeEnforce
	// ModeAudit logs and counts the denial but lets the request through.
	ModeAudit = grant.ModeAudit
)

// neverExpires is the expires_at of a grant without expiry.
const neverExpires = int64(math.MaxInt64)

// storeValue is g's document under data.kith.grants: methods and paths as
// objects keyed like input.kith.method_keys and input.kith.path_keys, and the
// patterns with a "*" inside a segment as globs for glob.match (a trailing
// "/*" becoming "/**"). Grants with the same methods, paths and expiry
// share one value, interned in values, which keeps the store small.
func storeValue(g Grant, values map[string]ast.Value) ast.Value {
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

// grantState says why g does or does not allow a request: "ok", "expired",
// "method" or "path". It is the Go twin of the built-in policy's matching,
// used to explain denials.
func grantState(g Grant, now time.Time, method, cleanedPath string) string {
	switch {
	case !g.ExpiresAt.IsZero() && !now.Before(g.ExpiresAt):
		return "expired"
	case len(g.Methods) > 0 && !slices.Contains(g.Methods, method):
		return "method"
	case len(g.Paths) > 0 && !slices.ContainsFunc(g.Paths, func(p string) bool { return grant.MatchPath(p, cleanedPath) }):
		return "path"
	}
	return "ok"
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
	r := "grant " + g.ID + " allows " + describe(g.Grant)
	g.allows.Store(&r)
	return r
}

// describe renders what g allows: "CALLER → TARGET GET,POST /api/*".
func describe(g Grant) string {
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
