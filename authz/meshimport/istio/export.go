package istio

import (
	"fmt"
	"maps"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"

	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/authz/meshimport"
)

type object struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   map[string]any `json:"metadata"`
	Spec       Spec           `json:"spec"`
}

// Export writes grants as security.istio.io/v1 AuthorizationPolicies: deny rules as DENY policies, grants
// as ALLOW policies, one per source, target and action, one rule per grant. A target prefix of a
// namespace is a policy in that namespace, the whole trust domain one in the root namespace, and an
// exact ID a selector on the labels of its workload (when they choose it alone in its namespace). What
// Istio cannot say is left out and listed: header matches, expiry, globs inside a path segment,
// expressions that are not exact, prefix or suffix matches, and targets no selector chooses.
func Export(grants []grant.Grant, opts meshimport.Options) (*meshimport.Export, error) {
	opts, err := opts.Defaults()
	if err != nil {
		return nil, err
	}
	out := &meshimport.Export{}
	type key struct {
		ns, name string
		selector string
		deny     bool
	}
	type policy struct {
		labels map[string]string
		rules  []Rule
	}
	policies := map[key]*policy{}
	for _, g := range grants {
		ns, labels, why := target(g.Target, opts)
		var r Rule
		if why == "" {
			r, why = rule(g, opts)
		}
		if why == "" && !g.ExpiresAt.IsZero() {
			why = "it expires: an AuthorizationPolicy does not"
		}
		if why != "" {
			out.Skipped = append(out.Skipped, fmt.Sprintf("grant %s (%s): %s", g.ID, g.Source, why))
			continue
		}
		name := meshimport.GrantID("kith-", g.Source, g.Target, strconv.FormatBool(g.Deny))
		if rest, ok := strings.CutPrefix(g.Source, "istio:"); ok {
			_, name, _ = strings.Cut(rest, "/")
		}
		k := key{ns, name, meshimport.LabelString(labels), g.Deny}
		p := policies[k]
		if p == nil {
			p = &policy{labels: labels}
			policies[k] = p
		}
		p.rules = append(p.rules, r)
	}
	keys := slices.SortedFunc(maps.Keys(policies), func(a, b key) int {
		return strings.Compare(fmt.Sprint(a.ns, "/", a.name, " ", a.selector, " ", a.deny), fmt.Sprint(b.ns, "/", b.name, " ", b.selector, " ", b.deny))
	})
	count := map[string]int{}
	for _, k := range keys {
		count[k.ns+"/"+k.name]++
	}
	seen := map[string]int{}
	for _, k := range keys {
		p := policies[k]
		name := k.name
		if count[k.ns+"/"+k.name] > 1 {
			seen[k.ns+"/"+k.name]++
			name = fmt.Sprintf("%s-%d", k.name, seen[k.ns+"/"+k.name])
		}
		spec := Spec{Rules: p.rules, Action: "ALLOW"}
		if k.deny {
			spec.Action = "DENY"
		}
		if len(p.labels) > 0 {
			spec.Selector = &struct {
				MatchLabels map[string]string `json:"matchLabels,omitempty"`
			}{p.labels}
		}
		out.Objects = append(out.Objects, object{Group + "/v1", Kind, map[string]any{"name": name, "namespace": k.ns}, spec})
	}
	return out, nil
}

// target is where a policy for target t goes: its namespace and selector labels, or why it cannot.
func target(t string, opts meshimport.Options) (ns string, labels map[string]string, why string) {
	if t == "spiffe://"+opts.TrustDomain.Name()+"/*" {
		return opts.RootNamespace, nil, ""
	}
	if strings.HasSuffix(t, "/*") {
		w := meshimport.WorkloadOf(strings.TrimSuffix(t, "/*")+"/x", nil)
		if w.Namespace != "" {
			if p, err := opts.Namespace(w.Namespace); err == nil && p == t {
				return w.Namespace, nil, ""
			}
		}
		return "", nil, "target " + t + " is a prefix other than a namespace's or the trust domain's"
	}
	for _, w := range opts.Workloads {
		if w.ID != t || len(w.Labels) == 0 || w.Namespace == "" {
			continue
		}
		if ids := opts.Select(w.Namespace, w.Labels); len(ids) == 1 && ids[0] == t {
			return w.Namespace, w.Labels, ""
		}
	}
	return "", nil, "target " + t + ": no registered workload with labels that select it alone in its namespace"
}

// rule is g as one rule, or why it cannot be one.
func rule(g grant.Grant, opts meshimport.Options) (Rule, string) {
	var r Rule
	if len(g.Headers) > 0 {
		return r, "header matches: Istio has them only in when conditions, which Kith does not import"
	}
	td := opts.TrustDomain.Name()
	src := Peer{}
	switch {
	case g.Caller == grant.AnyCaller:
	case g.Caller == "spiffe://"+td+"/*" && !g.Deny:
	default:
		src.Principals = []string{principal(g.Caller)}
	}
	for _, n := range g.NotCallers {
		src.NotPrincipals = append(src.NotPrincipals, principal(n))
	}
	if len(src.Principals)+len(src.NotPrincipals) > 0 {
		r.From = append(r.From, struct {
			Source Peer `json:"source"`
		}{src})
	}
	op := Operation{Methods: g.Methods, NotMethods: g.NotMethods}
	for _, p := range g.Paths {
		ip, ok := istioPath(p)
		if !ok {
			return r, fmt.Sprintf("path %q: a * inside a segment has no Istio form", p)
		}
		op.Paths = append(op.Paths, ip)
	}
	for _, re := range g.PathRegex {
		ip, ok := regexPath(re)
		if !ok {
			return r, fmt.Sprintf("path expression %q is not an exact, prefix or suffix match", re)
		}
		op.Paths = append(op.Paths, ip)
	}
	for _, p := range g.NotPaths {
		ip, ok := istioPath(p)
		if !ok {
			return r, fmt.Sprintf("excepted path %q: a * inside a segment has no Istio form", p)
		}
		op.NotPaths = append(op.NotPaths, ip)
	}
	for _, p := range g.Ports {
		op.Ports = append(op.Ports, strconv.FormatUint(uint64(p), 10))
	}
	if len(op.Methods)+len(op.NotMethods)+len(op.Paths)+len(op.NotPaths)+len(op.Ports) > 0 {
		r.To = append(r.To, struct {
			Operation Operation `json:"operation"`
		}{op})
	}
	return r, ""
}

// principal is the Istio principal of a caller pattern: "td/ns/x/sa/y" or "td/ns/x/*".
func principal(p string) string { return strings.TrimPrefix(p, "spiffe://") }

// istioPath is the Istio form of a Kith path pattern: exact, or a prefix ending in "/*".
func istioPath(p string) (string, bool) {
	body, _ := strings.CutSuffix(p, "/*")
	if strings.Contains(body, "*") {
		return "", false
	}
	return p, true
}

// regexPath is the Istio path of an expression path() made: a literal ("prefix*"), a literal then "$"
// (exact), or ".*" then a literal then "$" ("*suffix").
func regexPath(re string) (string, bool) {
	literal := func(s string) (string, bool) {
		parsed, err := syntax.Parse(s, syntax.Perl)
		if err != nil {
			return "", false
		}
		if parsed.Op == syntax.OpLiteral && parsed.Flags&syntax.FoldCase == 0 {
			return string(parsed.Rune), true
		}
		if parsed.Op == syntax.OpEmptyMatch {
			return "", true
		}
		return "", false
	}
	if rest, ok := strings.CutPrefix(re, ".*"); ok {
		if body, ok := strings.CutSuffix(rest, "$"); ok {
			if l, ok := literal(body); ok && !strings.Contains(l, "*") {
				return "*" + l, true
			}
		}
		return "", false
	}
	if body, ok := strings.CutSuffix(re, "$"); ok {
		if l, ok := literal(body); ok && !strings.Contains(l, "*") && l != "" {
			return l, true
		}
		return "", false
	}
	if l, ok := literal(re); ok && !strings.Contains(l, "*") && l != "" {
		return l + "*", true
	}
	return "", false
}
