// Package smi converts SMI access policies into Kith grants: access.smi-spec.io TrafficTarget
// (v1alpha1–v1alpha4) and IdentityBinding (v1alpha4), with the specs.smi-spec.io HTTPRouteGroup,
// TCPRoute and UDPRoute (v1alpha1–v1alpha4) they refer to.
//
// Each source identity of a TrafficTarget may call its destination identity on each route its rules
// select: one grant per source, destination and HTTP route, whose path expression is the route's
// pathRegex (RE2, anchored at the start as SMI says), with its methods and headers. TCPRoute ports limit
// the HTTP routes of the same TrafficTarget to those ports (as in the specification's L7 example); a
// TrafficTarget with only TCP routes allows any request on their ports. Kith does not mediate UDP: a
// UDPRoute is refused unless unsupported rules are skipped. Service accounts become SPIFFE IDs through
// Options.ServiceAccountID. Grants carry the source "smi:<namespace>/<name>" of their TrafficTarget and
// the reason "route <name>".
package smi

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/authz/meshimport"
)

// API groups and kinds.
const (
	AccessGroup = "access.smi-spec.io"
	SpecsGroup  = "specs.smi-spec.io"

	KindTrafficTarget   = "TrafficTarget"
	KindIdentityBinding = "IdentityBinding"
	KindHTTPRouteGroup  = "HTTPRouteGroup"
	KindTCPRoute        = "TCPRoute"
	KindUDPRoute        = "UDPRoute"
)

// Versions are the API versions read.
var Versions = []string{"v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"}

// Source is the grant source of the TrafficTarget namespace/name.
func Source(namespace, name string) string { return "smi:" + namespace + "/" + name }

// Identity names a service account or (v1alpha4) an IdentityBinding.
type Identity struct {
	Kind      string    `json:"kind"`
	Group     string    `json:"group,omitempty"`
	Name      string    `json:"name"`
	Namespace string    `json:"namespace,omitempty"`
	Port      portValue `json:"port,omitempty"` // v1alpha1 and v1alpha2 destinations
}

// RuleRef names a route group or route and, for an HTTPRouteGroup, some of its matches.
type RuleRef struct {
	Kind    string   `json:"kind"`
	Group   string   `json:"group,omitempty"`
	Name    string   `json:"name"`
	Matches []string `json:"matches,omitempty"`
}

// TrafficTargetSpec is a TrafficTarget's spec (v1alpha1 has it at the top level, with specs for rules).
type TrafficTargetSpec struct {
	Destination Identity   `json:"destination"`
	Rules       []RuleRef  `json:"rules,omitempty"`
	Specs       []RuleRef  `json:"specs,omitempty"` // v1alpha1
	Sources     []Identity `json:"sources"`
}

// HTTPMatch is one route of an HTTPRouteGroup.
type HTTPMatch struct {
	Name      string            `json:"name"`
	PathRegex string            `json:"pathRegex,omitempty"`
	Methods   []string          `json:"methods,omitempty"`
	Headers   map[string]string `json:"headers,omitempty"`
}

// PortMatch is the matches of a TCPRoute or UDPRoute.
type PortMatch struct {
	Name  string      `json:"name,omitempty"`
	Ports []portValue `json:"ports,omitempty"`
}

// IdentityBindingSpec is a v1alpha4 IdentityBinding's spec.
type IdentityBindingSpec struct {
	Schemes struct {
		PodLabelSelector *struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"podLabelSelector,omitempty"`
		SPIFFEIdentities []string `json:"spiffeIdentities,omitempty"`
		ServiceAccount   string   `json:"serviceAccount,omitempty"`
	} `json:"schemes"`
}

// portValue is a port written as a number or a string.
type portValue uint32

func (p *portValue) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return fmt.Errorf("port %s: want a number from 1 to 65535", b)
	}
	*p = portValue(n)
	return nil
}

// Policy is the SMI objects of an import, parsed.
type Policy struct {
	Targets  []TrafficTarget
	Groups   map[string]HTTPRouteGroup // by namespace/name
	TCP      map[string]PortRoute
	UDP      map[string]PortRoute
	Bindings map[string]IdentityBinding
	Ignored  []string // objects of other kinds
}

// TrafficTarget is a parsed TrafficTarget.
type TrafficTarget struct {
	Namespace, Name, Version string
	Spec                     TrafficTargetSpec
}

// HTTPRouteGroup is a parsed HTTPRouteGroup.
type HTTPRouteGroup struct {
	Namespace, Name, Version string
	Matches                  []HTTPMatch
}

// PortRoute is a parsed TCPRoute or UDPRoute.
type PortRoute struct {
	Namespace, Name, Version string
	Ports                    []uint32
}

// IdentityBinding is a parsed IdentityBinding.
type IdentityBinding struct {
	Namespace, Name string
	Spec            IdentityBindingSpec
}

// Parse reads the SMI objects among objs; objects of other API groups are listed in Policy.Ignored.
func Parse(objs []meshimport.Object) (*Policy, error) {
	p := &Policy{Groups: map[string]HTTPRouteGroup{}, TCP: map[string]PortRoute{}, UDP: map[string]PortRoute{}, Bindings: map[string]IdentityBinding{}}
	var errs []error
	for _, o := range objs {
		if err := p.add(o); err != nil {
			errs = append(errs, fmt.Errorf("%s %s (%s): %w", o.Kind, o.Ref(), o.File, err))
		}
	}
	return p, errors.Join(errs...)
}

// envelope is an object with its spec (and v1alpha1's top-level fields) kept raw.
type envelope struct {
	APIVersion  string          `json:"apiVersion"`
	Kind        string          `json:"kind"`
	Metadata    json.RawMessage `json:"metadata"`
	Spec        json.RawMessage `json:"spec,omitempty"`
	Status      json.RawMessage `json:"status,omitempty"`
	Matches     json.RawMessage `json:"matches,omitempty"`     // v1alpha1/v1alpha2 HTTPRouteGroup
	Destination json.RawMessage `json:"destination,omitempty"` // v1alpha1 TrafficTarget
	Specs       json.RawMessage `json:"specs,omitempty"`
	Sources     json.RawMessage `json:"sources,omitempty"`
}

func (p *Policy) add(o meshimport.Object) error {
	group := o.Group()
	if group != AccessGroup && group != SpecsGroup {
		p.Ignored = append(p.Ignored, fmt.Sprintf("%s %s %s", o.APIVersion, o.Kind, o.Ref()))
		return nil
	}
	if !slices.Contains(Versions, o.Version()) {
		return fmt.Errorf("apiVersion %s: Kith reads %s/%s", o.APIVersion, group, strings.Join(Versions, ", "))
	}
	var env envelope
	if err := meshimport.DecodeStrict(o.Raw, &env); err != nil {
		return fmt.Errorf("fields: %w", err)
	}
	key := o.Ref()
	switch {
	case group == AccessGroup && o.Kind == KindTrafficTarget:
		t := TrafficTarget{Namespace: o.Namespace, Name: o.Name, Version: o.Version()}
		switch {
		case env.Spec != nil && (env.Destination != nil || env.Specs != nil || env.Sources != nil):
			return errors.New("both spec and top-level destination, specs or sources: give one")
		case env.Spec != nil:
			if err := meshimport.DecodeStrict(env.Spec, &t.Spec); err != nil {
				return fmt.Errorf("spec: %w", err)
			}
		default: // v1alpha1
			top := struct {
				Destination json.RawMessage `json:"destination"`
				Specs       json.RawMessage `json:"specs"`
				Sources     json.RawMessage `json:"sources"`
			}{env.Destination, env.Specs, env.Sources}
			raw, _ := json.Marshal(top)
			if err := meshimport.DecodeStrict(raw, &t.Spec); err != nil {
				return err
			}
		}
		t.Spec.Rules = append(t.Spec.Rules, t.Spec.Specs...)
		t.Spec.Specs = nil
		p.Targets = append(p.Targets, t)
	case group == AccessGroup && o.Kind == KindIdentityBinding:
		b := IdentityBinding{Namespace: o.Namespace, Name: o.Name}
		if err := meshimport.DecodeStrict(env.Spec, &b.Spec); err != nil {
			return fmt.Errorf("spec: %w", err)
		}
		p.Bindings[key] = b
	case group == SpecsGroup && o.Kind == KindHTTPRouteGroup:
		g := HTTPRouteGroup{Namespace: o.Namespace, Name: o.Name, Version: o.Version()}
		raw := env.Matches
		if env.Spec != nil {
			if raw != nil {
				return errors.New("matches both at the top level and under spec: give one")
			}
			var spec struct {
				Matches json.RawMessage `json:"matches"`
			}
			if err := meshimport.DecodeStrict(env.Spec, &spec); err != nil {
				return fmt.Errorf("spec: %w", err)
			}
			raw = spec.Matches
		}
		if raw != nil {
			if err := meshimport.DecodeStrict(raw, &g.Matches); err != nil {
				return fmt.Errorf("matches: %w", err)
			}
		}
		for i, m := range g.Matches {
			if m.Name == "" {
				return fmt.Errorf("matches[%d] has no name", i)
			}
			if slices.ContainsFunc(g.Matches[:i], func(o HTTPMatch) bool { return o.Name == m.Name }) {
				return fmt.Errorf("two matches are named %q", m.Name)
			}
		}
		p.Groups[key] = g
	case group == SpecsGroup && (o.Kind == KindTCPRoute || o.Kind == KindUDPRoute):
		r := PortRoute{Namespace: o.Namespace, Name: o.Name, Version: o.Version()}
		if env.Spec != nil {
			var spec struct {
				Matches *PortMatch `json:"matches,omitempty"`
			}
			if err := meshimport.DecodeStrict(env.Spec, &spec); err != nil {
				return fmt.Errorf("spec: %w", err)
			}
			if spec.Matches != nil {
				for _, port := range spec.Matches.Ports {
					r.Ports = append(r.Ports, uint32(port))
				}
			}
		}
		if o.Kind == KindTCPRoute {
			p.TCP[key] = r
		} else {
			p.UDP[key] = r
		}
	default:
		return fmt.Errorf("kind %s is not part of %s", o.Kind, group)
	}
	return nil
}

// Convert turns the TrafficTargets of p into grants.
func Convert(p *Policy, opts meshimport.Options) (*meshimport.Result, error) {
	opts, err := opts.Defaults()
	if err != nil {
		return nil, err
	}
	res := &meshimport.Result{}
	for _, ig := range p.Ignored {
		res.Skipped = append(res.Skipped, ig+": not an SMI access or specs object")
	}
	var errs []error
	slices.SortFunc(p.Targets, func(a, b TrafficTarget) int { return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name) })
	for _, t := range p.Targets {
		gs, skipped, err := convertTarget(p, t, opts)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		res.Skipped = append(res.Skipped, skipped...)
		res.Grants = append(res.Grants, gs...)
		res.Objects = append(res.Objects, fmt.Sprintf("TrafficTarget %s/%s: %d grants", t.Namespace, t.Name, len(gs)))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	res.Grants = meshimport.Sort(res.Grants)
	return res, nil
}

// route is what one grant of a TrafficTarget allows, before its source and destination.
type route struct {
	kind, group, name string // for the ID and reason
	methods           []string
	pathRegex         []string
	headers           map[string]string
}

func convertTarget(p *Policy, t TrafficTarget, opts meshimport.Options) ([]grant.Grant, []string, error) {
	obj := "TrafficTarget " + t.Namespace + "/" + t.Name
	src := Source(t.Namespace, t.Name)
	var skipped []string
	unsupported := func(field, why string) error {
		u := &meshimport.Unsupported{Object: obj, Field: field, Why: why}
		if opts.SkipUnsupported {
			skipped = append(skipped, "skipped "+u.Error())
			return nil
		}
		return u
	}
	if len(t.Spec.Sources) == 0 {
		return nil, nil, fmt.Errorf("%s: no sources: a TrafficTarget allows its sources, and has none", obj)
	}
	if len(t.Spec.Rules) == 0 {
		return nil, nil, fmt.Errorf("%s: no rules: a TrafficTarget needs at least one", obj)
	}
	all, err := identities(p, t, t.Spec.Destination, "destination", opts)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", obj, err)
	}
	// Kith's agents serve only its own trust domain: a destination elsewhere is another mesh's to enforce.
	var targets []string
	for _, id := range all {
		if strings.HasPrefix(id, "spiffe://"+opts.TrustDomain.Name()+"/") {
			targets = append(targets, id)
		} else {
			skipped = append(skipped, fmt.Sprintf("%s: destination %s is outside the trust domain %s: not imported", obj, id, opts.TrustDomain.Name()))
		}
	}
	var callers []string
	for i, s := range t.Spec.Sources {
		ids, err := identities(p, t, s, fmt.Sprintf("sources[%d]", i), opts)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", obj, err)
		}
		callers = append(callers, ids...)
	}
	var routes []route
	var ports []uint32
	tcp, allPorts := false, false
	if d := t.Spec.Destination.Port; d != 0 {
		ports = append(ports, uint32(d))
	}
	for i, r := range t.Spec.Rules {
		field := fmt.Sprintf("rules[%d]", i)
		if t.Version == "v1alpha1" {
			field = fmt.Sprintf("specs[%d]", i)
		}
		key := t.Namespace + "/" + r.Name
		switch r.Kind {
		case KindHTTPRouteGroup:
			g, ok := p.Groups[key]
			if !ok {
				return nil, nil, fmt.Errorf("%s: %s: HTTPRouteGroup %s is missing: give it in the same import", obj, field, key)
			}
			matches := g.Matches
			if len(r.Matches) > 0 {
				matches = nil
				for _, name := range r.Matches {
					i := slices.IndexFunc(g.Matches, func(m HTTPMatch) bool { return m.Name == name })
					if i < 0 {
						var have []string
						for _, m := range g.Matches {
							have = append(have, m.Name)
						}
						return nil, nil, fmt.Errorf("%s: %s: route %q is missing from HTTPRouteGroup %s (it has %s)", obj, field, name, key, strings.Join(have, ", "))
					}
					matches = append(matches, g.Matches[i])
				}
			}
			for _, m := range matches {
				rt := route{kind: KindHTTPRouteGroup, group: r.Name, name: m.Name}
				for _, method := range m.Methods {
					if method == "*" {
						rt.methods = nil
						break
					}
					rt.methods = append(rt.methods, strings.ToUpper(method))
				}
				if m.PathRegex != "" && m.PathRegex != ".*" {
					rt.pathRegex = []string{m.PathRegex}
				}
				for k, v := range m.Headers {
					if rt.headers == nil {
						rt.headers = map[string]string{}
					}
					rt.headers[strings.ToLower(k)] = v
				}
				routes = append(routes, rt)
			}
		case KindTCPRoute:
			tr, ok := p.TCP[key]
			if !ok {
				return nil, nil, fmt.Errorf("%s: %s: TCPRoute %s is missing: give it in the same import", obj, field, key)
			}
			tcp = true
			if len(tr.Ports) == 0 {
				allPorts = true
			}
			ports = append(ports, tr.Ports...)
		case KindUDPRoute:
			if _, ok := p.UDP[key]; !ok {
				return nil, nil, fmt.Errorf("%s: %s: UDPRoute %s is missing: give it in the same import", obj, field, key)
			}
			if err := unsupported(field, "UDPRoute "+key+": Kith authorizes HTTP and TCP requests through Envoy; UDP traffic does not reach it"); err != nil {
				return nil, nil, err
			}
		default:
			return nil, nil, fmt.Errorf("%s: %s: kind %q: want HTTPRouteGroup, TCPRoute or UDPRoute", obj, field, r.Kind)
		}
	}
	if allPorts {
		ports = nil
	}
	slices.Sort(ports)
	ports = slices.Compact(ports)
	if len(routes) == 0 && (tcp || t.Spec.Destination.Port != 0) {
		routes = append(routes, route{kind: KindTCPRoute, name: "tcp"})
	}
	// A grant's ID names its route by group only when two groups of the TrafficTarget have a route of
	// that name, so that the TrafficTarget exported and imported again keeps its grants' IDs.
	groupsOf := map[string]map[string]bool{}
	for _, rt := range routes {
		if groupsOf[rt.name] == nil {
			groupsOf[rt.name] = map[string]bool{}
		}
		groupsOf[rt.name][rt.group] = true
	}
	var out []grant.Grant
	for _, target := range targets {
		for _, caller := range callers {
			for _, rt := range routes {
				group := ""
				if len(groupsOf[rt.name]) > 1 {
					group = rt.group
				}
				reason := "route " + rt.name
				if rt.kind == KindTCPRoute {
					reason = "TCP"
					if len(ports) > 0 {
						reason = "TCP ports " + portList(ports)
					}
				}
				g := grant.Grant{
					ID:     meshimport.GrantID("smi-", src, target, caller, rt.kind, group, rt.name),
					Caller: caller, Target: target, Methods: rt.methods, PathRegex: rt.pathRegex, Headers: rt.headers,
					Ports: slices.Clone(ports), Reason: reason, Source: src,
				}
				if err := g.Validate(); err != nil {
					return nil, nil, fmt.Errorf("%s: %s: %w", obj, reason, err)
				}
				out = append(out, g)
			}
		}
	}
	if len(out) == 0 {
		skipped = append(skipped, obj+": allows nothing Kith mediates")
	}
	return out, skipped, nil
}

func portList(ports []uint32) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.FormatUint(uint64(p), 10)
	}
	return strings.Join(s, ",")
}

// identities resolves a source or destination to SPIFFE IDs.
func identities(p *Policy, t TrafficTarget, id Identity, field string, opts meshimport.Options) ([]string, error) {
	ns := id.Namespace
	if ns == "" {
		ns = t.Namespace
	}
	switch id.Kind {
	case "ServiceAccount":
		s, err := opts.ServiceAccount(ns, id.Name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		return []string{s}, nil
	case KindIdentityBinding:
		b, ok := p.Bindings[ns+"/"+id.Name]
		if !ok {
			return nil, fmt.Errorf("%s: IdentityBinding %s/%s is missing: give it in the same import", field, ns, id.Name)
		}
		var out []string
		sc := b.Spec.Schemes
		if sc.ServiceAccount != "" {
			s, err := opts.ServiceAccount(ns, sc.ServiceAccount)
			if err != nil {
				return nil, fmt.Errorf("%s: IdentityBinding %s/%s: %w", field, ns, id.Name, err)
			}
			out = append(out, s)
		}
		for _, si := range sc.SPIFFEIdentities {
			s, err := opts.Principal(strings.TrimPrefix(si, "spiffe://"))
			if err != nil {
				return nil, fmt.Errorf("%s: IdentityBinding %s/%s: spiffeIdentities: %w", field, ns, id.Name, err)
			}
			out = append(out, s)
		}
		if sc.PodLabelSelector != nil {
			out = append(out, opts.Select(ns, sc.PodLabelSelector.MatchLabels)...)
		}
		slices.Sort(out)
		out = slices.Compact(out)
		if len(out) == 0 {
			return nil, fmt.Errorf("%s: IdentityBinding %s/%s binds no identity Kith knows (no service account, SPIFFE ID or registered workload with labels %s)",
				field, ns, id.Name, labelsOf(sc.PodLabelSelector))
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: kind %q: want ServiceAccount or IdentityBinding", field, id.Kind)
}

func labelsOf(sel *struct {
	MatchLabels map[string]string `json:"matchLabels"`
}) string {
	if sel == nil {
		return "(none)"
	}
	return meshimport.LabelString(sel.MatchLabels)
}
