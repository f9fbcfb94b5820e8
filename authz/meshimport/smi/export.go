package smi

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/authz/meshimport"
)

// ExportVersion is the API version Export writes.
const ExportVersion = "v1alpha3"

type object struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   map[string]any `json:"metadata"`
	Spec       any            `json:"spec"`
}

// Export writes grants as SMI v1alpha3 TrafficTargets with their HTTPRouteGroups and TCPRoutes, between
// service accounts (IDs that the SPIFFE ID template makes). Grants of one source, target and ports that
// are every caller times every route become one TrafficTarget, named after an smi: source; others one
// TrafficTarget per route. What SMI cannot say is left out and listed: deny rules, exceptions, expiry,
// ID prefixes and IDs that are not service accounts.
func Export(grants []grant.Grant, opts meshimport.Options) (*meshimport.Export, error) {
	opts, err := opts.Defaults()
	if err != nil {
		return nil, err
	}
	out := &meshimport.Export{}
	type key struct{ ns, name, target, ports string }
	groups := map[key][]grant.Grant{}
	for _, g := range grants {
		why := ""
		switch {
		case g.Deny:
			why = "a deny rule: SMI access control is additive"
		case len(g.NotMethods)+len(g.NotPaths)+len(g.NotCallers) > 0:
			why = "exceptions (not methods, paths or callers): SMI has none"
		case !g.ExpiresAt.IsZero():
			why = "it expires: SMI has no expiry"
		}
		ns, name := "", ""
		if why == "" {
			var ok bool
			if ns, _, ok = opts.ServiceAccountOf(g.Target); !ok {
				why = "target " + g.Target + " is not a service account's SPIFFE ID"
			} else if _, _, ok := opts.ServiceAccountOf(g.Caller); !ok {
				why = "caller " + g.Caller + " is not a service account's SPIFFE ID"
			}
		}
		if why != "" {
			out.Skipped = append(out.Skipped, fmt.Sprintf("grant %s (%s): %s", g.ID, g.Source, why))
			continue
		}
		if rest, ok := strings.CutPrefix(g.Source, "smi:"); ok {
			ns, name, _ = strings.Cut(rest, "/")
		} else {
			name = meshimport.GrantID("kith-", g.Source, g.Target)
		}
		k := key{ns, name, g.Target, fmt.Sprint(g.Ports)}
		groups[k] = append(groups[k], g)
	}
	keys := slices.SortedFunc(maps.Keys(groups), func(a, b key) int {
		return strings.Compare(a.ns+"/"+a.name+" "+a.target+" "+a.ports, b.ns+"/"+b.name+" "+b.target+" "+b.ports)
	})
	names := map[string]int{}
	for _, k := range keys {
		names[k.ns+"/"+k.name]++
	}
	seen := map[string]int{}
	for _, k := range keys {
		gs := groups[k]
		name := k.name
		if names[k.ns+"/"+k.name] > 1 {
			seen[k.ns+"/"+k.name]++
			name = fmt.Sprintf("%s-%d", k.name, seen[k.ns+"/"+k.name])
		}
		out.Objects = append(out.Objects, target(k.ns, name, gs, opts)...)
	}
	return out, nil
}

// routeOf is the HTTP route of g, and whether g has one (a grant for any request has none).
func routeOf(g grant.Grant) (HTTPMatch, bool) {
	m := HTTPMatch{Methods: slices.Clone(g.Methods), Headers: g.Headers}
	var res []string
	for _, p := range g.Paths {
		res = append(res, meshimport.PathRegex(p))
	}
	res = append(res, g.PathRegex...)
	switch len(res) {
	case 0:
	case 1:
		m.PathRegex = res[0]
	default:
		m.PathRegex = "(?:" + strings.Join(res, ")|(?:") + ")"
	}
	if len(m.Methods) == 0 && (m.PathRegex != "" || len(m.Headers) > 0) {
		m.Methods = []string{"*"}
	}
	return m, m.PathRegex != "" || len(m.Headers) > 0 || len(g.Methods) > 0
}

func signature(m HTTPMatch) string {
	return fmt.Sprintf("%q %q %q", m.Methods, m.PathRegex, meshimport.LabelString(m.Headers))
}

// target writes the grants of one source, target and ports.
func target(ns, name string, gs []grant.Grant, opts meshimport.Options) []any {
	var callers []string
	routes := map[string]HTTPMatch{}
	routeNames := map[string]string{}
	pairs := map[string]bool{}
	tcpOnly := false
	for _, g := range gs {
		if !slices.Contains(callers, g.Caller) {
			callers = append(callers, g.Caller)
		}
		m, ok := routeOf(g)
		if !ok {
			tcpOnly = true
			continue
		}
		sig := signature(m)
		routes[sig] = m
		if r, ok := strings.CutPrefix(g.Reason, "route "); ok && routeNames[sig] == "" {
			routeNames[sig] = r
		}
		pairs[g.Caller+"\x00"+sig] = true
	}
	slices.Sort(callers)
	sigs := slices.Sorted(maps.Keys(routes))
	// Name the routes: the name they were imported with, else r1, r2, ...; unique within the group.
	used := map[string]bool{}
	for i, sig := range sigs {
		n := routeNames[sig]
		if n == "" || used[n] {
			n = fmt.Sprintf("r%d", i+1)
		}
		used[n] = true
		m := routes[sig]
		m.Name = n
		routes[sig] = m
	}
	targetNS, targetSA, _ := opts.ServiceAccountOf(gs[0].Target)
	ports := gs[0].Ports
	product := !tcpOnly && len(pairs) == len(callers)*len(sigs)
	var objs []any
	emit := func(ttName string, callers []string, sigs []string, tcp bool) {
		var rules []RuleRef
		if len(ports) > 0 || tcp {
			var pm []portValue
			for _, p := range ports {
				pm = append(pm, portValue(p))
			}
			objs = append(objs, object{SpecsGroup + "/" + ExportVersion, KindTCPRoute, meta(ns, ttName), map[string]any{"matches": map[string]any{"ports": portsJSON(pm)}}})
			rules = append(rules, RuleRef{Kind: KindTCPRoute, Name: ttName})
		}
		if len(sigs) > 0 {
			var ms []HTTPMatch
			var names []string
			for _, s := range sigs {
				ms = append(ms, routes[s])
				names = append(names, routes[s].Name)
			}
			objs = append(objs, object{SpecsGroup + "/" + ExportVersion, KindHTTPRouteGroup, meta(ns, ttName), map[string]any{"matches": ms}})
			rules = append(rules, RuleRef{Kind: KindHTTPRouteGroup, Name: ttName, Matches: names})
		}
		var sources []Identity
		for _, c := range callers {
			cns, csa, _ := opts.ServiceAccountOf(c)
			sources = append(sources, Identity{Kind: "ServiceAccount", Name: csa, Namespace: cns})
		}
		objs = append(objs, object{AccessGroup + "/" + ExportVersion, KindTrafficTarget, meta(ns, ttName),
			TrafficTargetSpec{Destination: Identity{Kind: "ServiceAccount", Name: targetSA, Namespace: targetNS}, Rules: rules, Sources: sources}})
	}
	if len(sigs) == 0 {
		emit(name, callers, nil, true)
		return objs
	}
	if product {
		emit(name, callers, sigs, false)
		return objs
	}
	// Not a product: one TrafficTarget per route (and one for the grants for any request).
	if tcpOnly {
		var cs []string
		for _, g := range gs {
			if _, ok := routeOf(g); !ok && !slices.Contains(cs, g.Caller) {
				cs = append(cs, g.Caller)
			}
		}
		slices.Sort(cs)
		emit(name+"-tcp", cs, nil, true)
	}
	for _, sig := range sigs {
		var cs []string
		for _, c := range callers {
			if pairs[c+"\x00"+sig] {
				cs = append(cs, c)
			}
		}
		emit(name+"-"+routes[sig].Name, cs, []string{sig}, false)
	}
	return objs
}

func portsJSON(ps []portValue) []uint32 {
	out := []uint32{}
	for _, p := range ps {
		out = append(out, uint32(p))
	}
	return out
}

func meta(ns, name string) map[string]any {
	return map[string]any{"name": name, "namespace": ns}
}
