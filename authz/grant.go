package authz

import (
	"encoding/json"
	"fmt"
	"maps"
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
	regex := len(g.PathRegex) > 0
	key := fmt.Sprintf("%d %q %q %t %t %t", exp, g.Methods, g.Paths, regex, g.Extended(), g.Deny)
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
	// A grant with path expressions has its whole path condition checked in Go (input.kith.ext_ok).
	for _, p := range g.Paths {
		if regex {
			break
		}
		if body, trailing := strings.CutSuffix(p, "/*"); strings.Contains(body, "*") {
			if trailing {
				body += "/**"
			}
			globs = append(globs, ast.StringTerm(body))
		} else {
			paths.Insert(ast.StringTerm(p), ast.InternedTerm(true))
		}
	}
	if len(g.Paths) == 0 || regex {
		paths.Insert(ast.StringTerm("/*"), ast.InternedTerm(true))
	}
	v := ast.NewObject(
		ast.Item(ast.StringTerm("ext"), ast.InternedTerm(g.Extended())),
		ast.Item(ast.StringTerm("deny"), ast.InternedTerm(g.Deny)),
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
	case len(g.Paths) > 0 && len(g.PathRegex) == 0 && !slices.ContainsFunc(g.Paths, func(p string) bool { return grant.MatchPath(p, cleanedPath) }):
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
	compiled *grant.Compiled // for an extended grant
	allows   atomic.Pointer[string]
}

// allowsReason is "grant ID allows CALLER → TARGET METHODS PATHS", or for a grant imported from a mesh
// policy "allowed by smi default/api-service-metrics, route metrics: grant ID allows ...".
func (g *storedGrant) allowsReason() string {
	if r := g.allows.Load(); r != nil {
		return *r
	}
	r := "grant " + g.ID + " allows " + describe(g.Grant)
	if by := g.importedFrom(); by != "" {
		r = "allowed by " + by + ": " + r
	}
	g.allows.Store(&r)
	return r
}

// deniesReason is "deny rule ID denies CALLER → TARGET ...", prefixed like allowsReason.
func (g *storedGrant) deniesReason() string {
	r := "deny rule " + g.ID + " denies " + describe(g.Grant)
	if by := g.importedFrom(); by != "" {
		r = "denied by " + by + ": " + r
	}
	return r
}

// importedFrom names the mesh policy or Kubernetes object g comes from ("smi default/x, route metrics"),
// or is "" for a grant made with the CLI or from Git.
func (g *storedGrant) importedFrom() string {
	kind, obj, ok := strings.Cut(g.Source, ":")
	if !ok || (kind != "smi" && kind != "istio" && kind != "k8s") {
		return ""
	}
	if g.Reason != "" && kind != "k8s" {
		return kind + " " + obj + ", " + g.Reason
	}
	return kind + " " + obj
}

// from is " (from smi default/x, route metrics)" for an imported grant, else "".
func (g *storedGrant) from() string {
	if by := g.importedFrom(); by != "" {
		return " (from " + by + ")"
	}
	return ""
}

// describe renders what g allows: "CALLER → TARGET GET,POST /api/*".
func describe(g Grant) string {
	methods := "any method"
	if len(g.Methods) > 0 {
		methods = strings.Join(g.Methods, ",")
	}
	paths := "any path"
	if len(g.Paths) > 0 || len(g.PathRegex) > 0 {
		ps := slices.Clone(g.Paths)
		for _, r := range g.PathRegex {
			ps = append(ps, "~"+r)
		}
		paths = strings.Join(ps, ",")
	}
	s := fmt.Sprintf("%s → %s %s %s", g.Caller, g.Target, methods, paths)
	if len(g.NotMethods) > 0 {
		s += " except methods " + strings.Join(g.NotMethods, ",")
	}
	if len(g.NotPaths) > 0 {
		s += " except paths " + strings.Join(g.NotPaths, ",")
	}
	if len(g.NotCallers) > 0 {
		s += " except callers " + strings.Join(g.NotCallers, ",")
	}
	for _, name := range slices.Sorted(maps.Keys(g.Headers)) {
		s += fmt.Sprintf(" header %s~%s", name, g.Headers[name])
	}
	if len(g.Ports) > 0 {
		ports := make([]string, len(g.Ports))
		for i, p := range g.Ports {
			ports[i] = strconv.FormatUint(uint64(p), 10)
		}
		s += " ports " + strings.Join(ports, ",")
	}
	return s
}

// extIndex holds extended grants by target, caller and ID.
type extIndex map[string]map[string]map[string]*grant.Compiled

func (x extIndex) put(c *grant.Compiled) {
	callers := x[c.Target]
	if callers == nil {
		callers = map[string]map[string]*grant.Compiled{}
		x[c.Target] = callers
	}
	ids := callers[c.Caller]
	if ids == nil {
		ids = map[string]*grant.Compiled{}
		callers[c.Caller] = ids
	}
	ids[c.ID] = c
}

func (x extIndex) remove(g Grant) {
	callers := x[g.Target]
	delete(callers[g.Caller], g.ID)
	if len(callers[g.Caller]) == 0 {
		delete(callers, g.Caller)
	}
	if len(callers) == 0 {
		delete(x, g.Target)
	}
}
