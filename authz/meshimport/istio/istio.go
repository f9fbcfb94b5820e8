// Package istio converts Istio's security.istio.io AuthorizationPolicy (v1 and v1beta1) into Kith grants
// and deny rules, as Istio evaluates them: a DENY policy's rules become deny rules, which win over every
// grant; an ALLOW policy's rules become grants. Each rule gives one grant per source caller and operation
// (its from and to are each a list of alternatives).
//
// The policy applies to the workloads its selector chooses among Options.Workloads, in its namespace (in
// every namespace from the root namespace), or without a selector to every workload of its namespace
// (of the trust domain from the root namespace). Principals "TD/ns/NS/sa/SA" become SPIFFE IDs, Istio's
// cluster.local meaning Kith's trust domain; namespaces become the prefix of their service accounts'
// IDs; paths are exact, "prefix*", "*suffix" or "*". What Kith cannot express — when conditions,
// request principals, IP blocks, hosts, notPorts, CUSTOM and AUDIT actions, targetRefs — is refused with
// the object, the field and why, or skipped (and listed) with Options.SkipUnsupported.
//
// Kith denies what no grant allows. Istio allows every request to a workload no ALLOW policy selects;
// Kith does not, so a DENY-only Istio policy set is narrower in Kith, never wider. A policy with no rules
// matches nothing (Istio: "If not set, the match will never occur"): an ALLOW policy without rules allows
// nothing, a DENY policy without rules denies nothing. A rule {} matches every request.
package istio

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/authz/meshimport"
)

// Group is the API group read; Versions its versions.
const (
	Group = "security.istio.io"
	Kind  = "AuthorizationPolicy"
)

// Versions are the API versions read.
var Versions = []string{"v1", "v1beta1"}

// Source is the grant source of the AuthorizationPolicy namespace/name.
func Source(namespace, name string) string { return "istio:" + namespace + "/" + name }

// Spec is an AuthorizationPolicy's spec. Fields Kith refuses are kept raw so that they can be named.
type Spec struct {
	Selector *struct {
		MatchLabels map[string]string `json:"matchLabels,omitempty"`
	} `json:"selector,omitempty"`
	TargetRef  json.RawMessage `json:"targetRef,omitempty"`
	TargetRefs json.RawMessage `json:"targetRefs,omitempty"`
	Rules      []Rule          `json:"rules,omitempty"`
	Action     string          `json:"action,omitempty"`
	Provider   json.RawMessage `json:"provider,omitempty"`
}

// Rule is one rule: it matches when one of From, one of To and every When match.
type Rule struct {
	From []struct {
		Source Peer `json:"source"`
	} `json:"from,omitempty"`
	To []struct {
		Operation Operation `json:"operation"`
	} `json:"to,omitempty"`
	When json.RawMessage `json:"when,omitempty"`
}

// Peer is the source of a request; its fields are ANDed.
type Peer struct {
	Principals           []string `json:"principals,omitempty"`
	NotPrincipals        []string `json:"notPrincipals,omitempty"`
	RequestPrincipals    []string `json:"requestPrincipals,omitempty"`
	NotRequestPrincipals []string `json:"notRequestPrincipals,omitempty"`
	Namespaces           []string `json:"namespaces,omitempty"`
	NotNamespaces        []string `json:"notNamespaces,omitempty"`
	ServiceAccounts      []string `json:"serviceAccounts,omitempty"`
	NotServiceAccounts   []string `json:"notServiceAccounts,omitempty"`
	IPBlocks             []string `json:"ipBlocks,omitempty"`
	NotIPBlocks          []string `json:"notIpBlocks,omitempty"`
	RemoteIPBlocks       []string `json:"remoteIpBlocks,omitempty"`
	NotRemoteIPBlocks    []string `json:"notRemoteIpBlocks,omitempty"`
}

// Operation is what a request does; its fields are ANDed.
type Operation struct {
	Hosts      []string `json:"hosts,omitempty"`
	NotHosts   []string `json:"notHosts,omitempty"`
	Ports      []string `json:"ports,omitempty"`
	NotPorts   []string `json:"notPorts,omitempty"`
	Methods    []string `json:"methods,omitempty"`
	NotMethods []string `json:"notMethods,omitempty"`
	Paths      []string `json:"paths,omitempty"`
	NotPaths   []string `json:"notPaths,omitempty"`
}

// Policy is a parsed AuthorizationPolicy.
type Policy struct {
	Namespace, Name, Version string
	DryRun                   bool // annotated istio.io/dry-run: "true": Istio does not enforce it
	Spec                     Spec
}

// Parse reads the AuthorizationPolicies among objs; other objects are returned by name in ignored.
func Parse(objs []meshimport.Object) (policies []Policy, ignored []string, err error) {
	var errs []error
	for _, o := range objs {
		if o.Group() != Group || o.Kind != Kind {
			ignored = append(ignored, fmt.Sprintf("%s %s %s", o.APIVersion, o.Kind, o.Ref()))
			continue
		}
		if !slices.Contains(Versions, o.Version()) {
			errs = append(errs, fmt.Errorf("%s %s (%s): apiVersion %s: Kith reads %s/v1 and %s/v1beta1", o.Kind, o.Ref(), o.File, o.APIVersion, Group, Group))
			continue
		}
		var env struct {
			APIVersion string          `json:"apiVersion"`
			Kind       string          `json:"kind"`
			Metadata   json.RawMessage `json:"metadata"`
			Spec       json.RawMessage `json:"spec,omitempty"`
			Status     json.RawMessage `json:"status,omitempty"`
		}
		p := Policy{Namespace: o.Namespace, Name: o.Name, Version: o.Version(), DryRun: o.Annotations["istio.io/dry-run"] == "true"}
		err := meshimport.DecodeStrict(o.Raw, &env)
		if err == nil && env.Spec != nil && string(env.Spec) != "null" {
			err = meshimport.DecodeStrict(env.Spec, &p.Spec)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s (%s): %w", o.Kind, o.Ref(), o.File, err))
			continue
		}
		policies = append(policies, p)
	}
	return policies, ignored, errors.Join(errs...)
}

// Convert turns policies into grants and deny rules.
func Convert(policies []Policy, opts meshimport.Options) (*meshimport.Result, error) {
	opts, err := opts.Defaults()
	if err != nil {
		return nil, err
	}
	res := &meshimport.Result{}
	var errs []error
	slices.SortFunc(policies, func(a, b Policy) int { return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name) })
	for _, p := range policies {
		c := &converter{p: p, opts: opts, obj: Kind + " " + p.Namespace + "/" + p.Name, src: Source(p.Namespace, p.Name)}
		gs, err := c.convert()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		res.Skipped = append(res.Skipped, c.skipped...)
		res.Grants = append(res.Grants, gs...)
		kind := "grants"
		if p.Spec.Action == "DENY" {
			kind = "deny rules"
		}
		res.Objects = append(res.Objects, fmt.Sprintf("%s: %d %s", c.obj, len(gs), kind))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	res.Grants = meshimport.Sort(res.Grants)
	return res, nil
}

type converter struct {
	p       Policy
	opts    meshimport.Options
	obj     string
	src     string
	skipped []string
}

// unsupported refuses field, or with SkipUnsupported notes it and returns nil: the caller then skips
// the whole rule the field is in (skipping the field alone could widen an ALLOW).
func (c *converter) unsupported(field, why string) error {
	u := &meshimport.Unsupported{Object: c.obj, Field: field, Why: why}
	if c.opts.SkipUnsupported {
		c.skipped = append(c.skipped, "skipped "+u.Error())
		return nil
	}
	return u
}

var errSkip = errors.New("skip")

func (c *converter) convert() ([]grant.Grant, error) {
	spec := c.p.Spec
	if c.p.DryRun {
		c.skipped = append(c.skipped, c.obj+` is annotated istio.io/dry-run: "true": Istio does not enforce it, so neither does Kith (not imported)`)
		return nil, nil
	}
	deny := false
	switch spec.Action {
	case "", "ALLOW":
	case "DENY":
		deny = true
	case "CUSTOM", "AUDIT":
		if err := c.unsupported("spec.action", spec.Action+": Kith decides allow and deny itself; it has no external authorizer or audit plugin to hand requests to"); err != nil {
			return nil, err
		}
		return nil, nil
	default:
		return nil, fmt.Errorf("%s: spec.action %q: want ALLOW, DENY, CUSTOM or AUDIT", c.obj, spec.Action)
	}
	if spec.TargetRef != nil || spec.TargetRefs != nil {
		if err := c.unsupported("spec.targetRefs", "policies attached to gateways, services or service entries: Kith's targets are workload identities; use selector"); err != nil {
			return nil, err
		}
		return nil, nil
	}
	targets, err := c.targets()
	if err != nil {
		return nil, err
	}
	if len(spec.Rules) == 0 {
		what := "allows nothing"
		if deny {
			what = "denies nothing"
		}
		hint := ""
		if deny {
			hint = "; to deny every request, write rules: [{}] (one rule that matches everything)"
		}
		c.skipped = append(c.skipped, fmt.Sprintf("%s has no rules: it %s (Istio: a policy without rules never matches)%s", c.obj, what, hint))
		return nil, nil
	}
	var out []grant.Grant
	for i, r := range spec.Rules {
		field := fmt.Sprintf("spec.rules[%d]", i)
		gs, err := c.rule(field, r, targets, deny)
		if errors.Is(err, errSkip) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, gs...)
	}
	return out, nil
}

// targets are the SPIFFE IDs or prefixes the policy applies to.
func (c *converter) targets() ([]string, error) {
	ns := c.p.Namespace
	root := ns == c.opts.RootNamespace
	if c.p.Spec.Selector == nil || len(c.p.Spec.Selector.MatchLabels) == 0 {
		if root {
			return []string{"spiffe://" + c.opts.TrustDomain.Name() + "/*"}, nil
		}
		t, err := c.opts.Namespace(ns)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.obj, err)
		}
		return []string{t}, nil
	}
	if root {
		ns = ""
	}
	ids := c.opts.Select(ns, c.p.Spec.Selector.MatchLabels)
	if len(ids) == 0 {
		c.skipped = append(c.skipped, fmt.Sprintf("%s: spec.selector %s selects no registered workload: nothing imported (import again once there is one)",
			c.obj, meshimport.LabelString(c.p.Spec.Selector.MatchLabels)))
	}
	return ids, nil
}

// rule converts one rule; errSkip when it is skipped.
func (c *converter) rule(field string, r Rule, targets []string, deny bool) ([]grant.Grant, error) {
	skip := func(f, why string) error {
		if err := c.unsupported(field+"."+f, why); err != nil {
			return err
		}
		return errSkip
	}
	if r.When != nil && string(r.When) != "null" && string(r.When) != "[]" {
		return nil, skip("when", "conditions on request attributes (such as request.auth.claims) are not part of a Kith grant")
	}
	type caller struct {
		pattern string
		not     []string
	}
	var callers []caller
	if len(r.From) == 0 {
		callers = []caller{{pattern: c.anyCaller(deny)}}
	}
	for j, f := range r.From {
		ff := fmt.Sprintf("from[%d].source", j)
		s := f.Source
		for _, u := range []struct {
			name string
			v    []string
			why  string
		}{
			{"requestPrincipals", s.RequestPrincipals, "request principals come from end-user JWTs, which Kith does not verify"},
			{"notRequestPrincipals", s.NotRequestPrincipals, "request principals come from end-user JWTs, which Kith does not verify"},
			{"ipBlocks", s.IPBlocks, "Kith authorizes identities, not addresses"},
			{"notIpBlocks", s.NotIPBlocks, "Kith authorizes identities, not addresses"},
			{"remoteIpBlocks", s.RemoteIPBlocks, "Kith authorizes identities, not addresses"},
			{"notRemoteIpBlocks", s.NotRemoteIPBlocks, "Kith authorizes identities, not addresses"},
		} {
			if len(u.v) > 0 {
				return nil, skip(ff+"."+u.name, u.why)
			}
		}
		var sets [][]string // each a list of alternatives; the caller must be in every set
		if len(s.Principals) > 0 {
			ps, err := c.patterns(field+"."+ff+".principals", s.Principals, c.principal, deny)
			if err != nil {
				return nil, err
			}
			sets = append(sets, ps)
		}
		if len(s.ServiceAccounts) > 0 {
			ps, err := c.patterns(field+"."+ff+".serviceAccounts", s.ServiceAccounts, c.serviceAccount, deny)
			if err != nil {
				return nil, err
			}
			sets = append(sets, ps)
		}
		if len(s.Namespaces) > 0 {
			ps, err := c.patterns(field+"."+ff+".namespaces", s.Namespaces, c.namespace, deny)
			if err != nil {
				return nil, err
			}
			sets = append(sets, ps)
		}
		var not []string
		for _, n := range []struct {
			name string
			v    []string
			f    func(string) (string, error)
		}{{"notPrincipals", s.NotPrincipals, c.principal}, {"notServiceAccounts", s.NotServiceAccounts, c.serviceAccount}, {"notNamespaces", s.NotNamespaces, c.namespace}} {
			if len(n.v) == 0 {
				continue
			}
			// Exceptions must be exact either way: one too narrow would let an excepted caller through a
			// DENY, or into an ALLOW. Patterns Kith cannot express are refused by patterns.
			ps, err := c.patterns(field+"."+ff+"."+n.name, n.v, n.f, true)
			if err != nil {
				return nil, err
			}
			for _, p := range ps {
				if p == grant.AnyCaller || p == "spiffe://"+c.opts.TrustDomain.Name()+"/*" {
					// "not any caller": the source matches nobody.
					return nil, nil
				}
			}
			not = append(not, ps...)
		}
		alts := []string{c.anyCaller(deny)}
		for _, set := range sets {
			alts = intersect(alts, set)
		}
		for _, a := range alts {
			callers = append(callers, caller{pattern: a, not: not})
		}
	}
	type op struct {
		methods, notMethods, paths, pathRegex, notPaths []string
		ports                                           []uint32
	}
	var ops []op
	if len(r.To) == 0 {
		ops = []op{{}}
	}
	for j, t := range r.To {
		tf := fmt.Sprintf("%s.to[%d].operation", field, j)
		o := t.Operation
		for _, u := range []struct {
			name string
			v    []string
			why  string
		}{
			{"hosts", o.Hosts, "Kith's targets are workload identities, not host names"},
			{"notHosts", o.NotHosts, "Kith's targets are workload identities, not host names"},
			{"notPorts", o.NotPorts, "a grant lists the ports it allows, not the ones it excepts"},
		} {
			if len(u.v) > 0 {
				return nil, skip(strings.TrimPrefix(tf, field+".")+"."+u.name, u.why)
			}
		}
		var x op
		for _, m := range o.Methods {
			if m == "*" {
				x.methods = nil
				break
			}
			if strings.HasPrefix(m, "/") {
				return nil, skip(strings.TrimPrefix(tf, field+".")+".methods", fmt.Sprintf("%q is a gRPC method: give it as a path (POST %s)", m, m))
			}
			x.methods = append(x.methods, strings.ToUpper(m))
		}
		for _, m := range o.NotMethods {
			x.notMethods = append(x.notMethods, strings.ToUpper(m))
		}
		for _, p := range o.Paths {
			pat, re, any, err := path(p)
			if err != nil {
				return nil, fmt.Errorf("%s: %s.paths: %w", c.obj, tf, err)
			}
			if any {
				x.paths, x.pathRegex = nil, nil
				break
			}
			if pat != "" {
				x.paths = append(x.paths, pat)
			} else {
				x.pathRegex = append(x.pathRegex, re)
			}
		}
		for _, p := range o.NotPaths {
			pat, _, any, err := path(p)
			if err != nil {
				return nil, fmt.Errorf("%s: %s.notPaths: %w", c.obj, tf, err)
			}
			if any {
				return nil, nil // every path is excepted: the operation matches nothing
			}
			if pat == "" {
				return nil, skip(strings.TrimPrefix(tf, field+".")+".notPaths", fmt.Sprintf("%q: an excepted path must be exact or a prefix ending in /*", p))
			}
			x.notPaths = append(x.notPaths, pat)
		}
		for _, p := range o.Ports {
			n, err := strconv.ParseUint(p, 10, 16)
			if err != nil || n == 0 {
				return nil, fmt.Errorf("%s: %s.ports: %q: want a port number", c.obj, tf, p)
			}
			x.ports = append(x.ports, uint32(n))
		}
		ops = append(ops, x)
	}
	var out []grant.Grant
	for _, t := range targets {
		for _, cl := range callers {
			for i, o := range ops {
				g := grant.Grant{
					ID:     meshimport.GrantID("istio-", c.src, field, t, cl.pattern, strconv.Itoa(i), strings.Join(cl.not, ",")),
					Caller: cl.pattern, Target: t, Methods: o.methods, Paths: o.paths, PathRegex: o.pathRegex, Ports: o.ports,
					NotMethods: o.notMethods, NotPaths: o.notPaths, NotCallers: cl.not, Deny: deny,
					Reason: strings.TrimPrefix(field, "spec."), Source: c.src,
				}
				if err := g.Validate(); err != nil {
					return nil, fmt.Errorf("%s: %s: %w", c.obj, field, err)
				}
				out = append(out, g)
			}
		}
	}
	return out, nil
}

// anyCaller is the caller pattern of a source that names none: any caller for a deny rule; every
// identity of the trust domain for a grant (Istio would allow other trust domains and plain text too).
func (c *converter) anyCaller(deny bool) string {
	if deny {
		return grant.AnyCaller
	}
	return "spiffe://" + c.opts.TrustDomain.Name() + "/*"
}

// patterns converts a list of principals, service accounts or namespaces with f, handling "*".
func (c *converter) patterns(field string, vs []string, f func(string) (string, error), deny bool) ([]string, error) {
	var out []string
	for _, v := range vs {
		if v == "*" {
			return []string{c.anyCaller(deny)}, nil
		}
		p, err := f(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", c.obj, field, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func (c *converter) principal(p string) (string, error) {
	if strings.HasPrefix(p, "*") {
		return "", fmt.Errorf("%q: a suffix match is not a SPIFFE ID prefix; Kith cannot express it", p)
	}
	if prefix, ok := strings.CutSuffix(p, "*"); ok {
		if !strings.HasSuffix(prefix, "/") {
			return "", fmt.Errorf("%q: a prefix must end with / to be a SPIFFE ID prefix (as cluster.local/ns/prod/*)", p)
		}
		if td := strings.TrimSuffix(prefix, "/"); !strings.Contains(td, "/") { // "td/*": the whole trust domain
			if slices.Contains(c.opts.TrustDomainAliases, td) {
				td = c.opts.TrustDomain.Name()
			}
			if _, err := spiffeid.TrustDomainFromString(td); err != nil {
				return "", fmt.Errorf("%q: %w", p, err)
			}
			return "spiffe://" + td + "/*", nil
		}
		id, err := c.opts.Principal(strings.TrimSuffix(prefix, "/"))
		if err != nil {
			return "", err
		}
		return id + "/*", nil
	}
	return c.opts.Principal(p)
}

func (c *converter) serviceAccount(s string) (string, error) {
	ns, sa, ok := strings.Cut(s, "/")
	if !ok {
		return "", fmt.Errorf("service account %q: want NAMESPACE/NAME", s)
	}
	return c.opts.ServiceAccount(ns, sa)
}

func (c *converter) namespace(ns string) (string, error) {
	if strings.Contains(ns, "*") {
		return "", fmt.Errorf("namespace %q: only exact namespaces and * are supported", ns)
	}
	return c.opts.Namespace(ns)
}

// intersect returns the patterns every caller of which is in one of a and one of b.
func intersect(a, b []string) []string {
	var out []string
	for _, x := range a {
		for _, y := range b {
			switch {
			case grant.Covers(x, y):
				out = append(out, y)
			case grant.Covers(y, x):
				out = append(out, x)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// path converts an Istio path: exact, "prefix*", "*suffix" or "*" (any). It returns a Kith path pattern
// when one says the same, else an RE2 expression (anchored at the start by the engine).
func path(p string) (pattern, re string, any bool, err error) {
	switch {
	case p == "*":
		return "", "", true, nil
	case p == "":
		return "", "", false, errors.New("an empty path")
	case strings.HasPrefix(p, "*"):
		suffix := p[1:]
		if strings.Contains(suffix, "*") {
			return "", "", false, fmt.Errorf("%q: only one * at the start or end", p)
		}
		return "", ".*" + regexp.QuoteMeta(suffix) + "$", false, nil
	case strings.HasSuffix(p, "*"):
		prefix := p[:len(p)-1]
		if strings.Contains(prefix, "*") {
			return "", "", false, fmt.Errorf("%q: only one * at the start or end", p)
		}
		if strings.HasSuffix(prefix, "/") && validPattern(prefix+"*") {
			return prefix + "*", "", false, nil
		}
		return "", regexp.QuoteMeta(prefix), false, nil
	case strings.Contains(p, "*"):
		return "", "", false, fmt.Errorf("%q: a * only at the start or end", p)
	}
	if validPattern(p) {
		return p, "", false, nil
	}
	return "", regexp.QuoteMeta(p) + "$", false, nil
}

func validPattern(p string) bool {
	return grant.Grant{ID: "x", Caller: "spiffe://x.test/a", Target: "spiffe://x.test/b", Paths: []string{p}}.Validate() == nil
}
