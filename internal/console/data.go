package console

import (
	"cmp"
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/authz/grant"
)

// pageAll calls list with each next page token until the last page.
func pageAll[T any](ctx context.Context, list func(ctx context.Context, token string) ([]T, string, error)) ([]T, error) {
	var all []T
	token := ""
	for {
		items, next, err := list(ctx, token)
		if err != nil {
			return nil, err
		}
		all = append(all, items...)
		if next == "" {
			return all, nil
		}
		token = next
	}
}

const pageSize = 5000

func (c *Console) entries(ctx context.Context, req *adminv1.ListEntriesRequest) ([]*adminv1.Entry, error) {
	return pageAll(ctx, func(ctx context.Context, tok string) ([]*adminv1.Entry, string, error) {
		r := &adminv1.ListEntriesRequest{SpiffeId: req.GetSpiffeId(), PageSize: pageSize, PageToken: tok}
		resp, err := c.cfg.Admin.ListEntries(ctx, r)
		return resp.GetEntries(), resp.GetNextPageToken(), err
	})
}

func (c *Console) grants(ctx context.Context) ([]*adminv1.Grant, error) {
	return pageAll(ctx, func(ctx context.Context, tok string) ([]*adminv1.Grant, string, error) {
		resp, err := c.cfg.Admin.ListGrants(ctx, &adminv1.ListGrantsRequest{PageSize: pageSize, PageToken: tok})
		return resp.GetGrants(), resp.GetNextPageToken(), err
	})
}

func (c *Console) modes(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	tok := ""
	for {
		resp, err := c.cfg.Admin.ListTargetModes(ctx, &adminv1.ListTargetModesRequest{PageSize: pageSize, PageToken: tok})
		if err != nil {
			return nil, err
		}
		for k, v := range resp.GetModes() {
			out[k] = v
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			return out, nil
		}
	}
}

// Node is an identity of the access graph: a SPIFFE ID an entry names, or a grant's caller or target
// pattern ("…/*" stands for every ID under it).
type Node struct {
	ID      string            `json:"id"`
	Domain  string            `json:"domain"` // trust domain
	Group   string            `json:"group"`  // namespace (/ns/<ns>/…) or first path segment
	Labels  map[string]string `json:"labels,omitempty"`
	Entries int               `json:"entries"`
	Pattern bool              `json:"pattern,omitempty"` // a prefix ending in /*
	Mode    string            `json:"mode,omitempty"`    // "audit" when the target is in audit mode
}

// Edge is a grant: caller may call target, each the index of its node in Graph.Nodes (indexes rather
// than IDs keep the 5,000-grant graph's JSON to a third).
type Edge struct {
	ID        string   `json:"id"`
	Caller    int      `json:"c"`
	Target    int      `json:"t"`
	Source    string   `json:"source"` // cli, git, k8s, smi, istio or other
	Methods   []string `json:"methods,omitempty"`
	Paths     []string `json:"paths,omitempty"`
	ExpiresAt string   `json:"expires_at,omitempty"` // RFC 3339; set when time-bound
	Expired   bool     `json:"expired,omitempty"`
}

// Graph is the access graph's data.
type Graph struct {
	Now   string `json:"now"`
	Nodes []Node `json:"nodes"`
	Edges []Edge `json:"edges"`
}

// sourceKind names a grant source's family for styling: "git:<sha>" is git, "k8s:…" k8s, and so on.
func sourceKind(src string) string {
	kind, _, _ := strings.Cut(src, ":")
	switch kind {
	case "cli", "git", "k8s", "smi", "istio":
		return kind
	case "":
		return "cli"
	}
	return "other"
}

// placeOf returns an ID's trust domain and group: /ns/<ns>/… groups by namespace, anything else by its
// first path segment.
func placeOf(id string) (domain, group string) {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return "", id
	}
	domain, path, _ := strings.Cut(rest, "/")
	segs := strings.Split(path, "/")
	switch {
	case len(segs) >= 2 && segs[0] == "ns":
		return domain, "ns/" + segs[1]
	case segs[0] == "" || segs[0] == "*":
		return domain, "/"
	case len(segs) == 1:
		return domain, "/"
	}
	return domain, segs[0]
}

func (c *Console) graph(ctx context.Context, _ *http.Request) (any, error) {
	es, err := c.entries(ctx, &adminv1.ListEntriesRequest{})
	if err != nil {
		return nil, err
	}
	gs, err := c.grants(ctx)
	if err != nil {
		return nil, err
	}
	modes, err := c.modes(ctx)
	if err != nil {
		return nil, err
	}
	nodes := map[string]*Node{}
	node := func(id string) *Node {
		n, ok := nodes[id]
		if !ok {
			d, g := placeOf(id)
			n = &Node{ID: id, Domain: d, Group: g, Pattern: strings.HasSuffix(id, "/*"), Mode: modes[id]}
			nodes[id] = n
		}
		return n
	}
	for _, e := range es {
		n := node(e.GetSpiffeId())
		n.Entries++
		for k, v := range e.GetLabels() {
			if n.Labels == nil {
				n.Labels = map[string]string{}
			}
			n.Labels[k] = v
		}
	}
	out := Graph{Now: c.cfg.Now().UTC().Format(time.RFC3339), Edges: make([]Edge, 0, len(gs))}
	ends := make([][2]string, 0, len(gs))
	for _, g := range gs {
		node(g.GetCaller())
		node(g.GetTarget())
		e := Edge{ID: g.GetId(), Source: sourceKind(g.GetSource()),
			Methods: g.GetMethods(), Paths: g.GetPaths(), Expired: g.GetExpired()}
		if g.GetExpiresAt() != nil {
			e.ExpiresAt = g.GetExpiresAt().AsTime().UTC().Format(time.RFC3339)
		}
		out.Edges = append(out.Edges, e)
		ends = append(ends, [2]string{g.GetCaller(), g.GetTarget()})
	}
	for t, m := range modes {
		node(t).Mode = m
	}
	out.Nodes = make([]Node, 0, len(nodes))
	for _, n := range nodes {
		out.Nodes = append(out.Nodes, *n)
	}
	slices.SortFunc(out.Nodes, func(a, b Node) int {
		return cmp.Or(cmp.Compare(a.Domain, b.Domain), cmp.Compare(a.Group, b.Group), cmp.Compare(a.ID, b.ID))
	})
	index := make(map[string]int, len(out.Nodes))
	for i, n := range out.Nodes {
		index[n.ID] = i
	}
	for i := range out.Edges {
		out.Edges[i].Caller, out.Edges[i].Target = index[ends[i][0]], index[ends[i][1]]
	}
	return out, nil
}

// auditFor returns the newest audit events (of the last scan) whose target is one of targets, newest first.
func (c *Console) auditFor(ctx context.Context, targets ...string) ([]pb, error) {
	resp, err := c.cfg.Admin.ListAuditEvents(ctx, &adminv1.ListAuditEventsRequest{NewestFirst: true, Limit: auditScan, PageSize: auditScan})
	if err != nil {
		return nil, err
	}
	var out []*adminv1.AuditEvent
	for _, ev := range resp.GetEvents() {
		if slices.Contains(targets, ev.GetTarget()) {
			out = append(out, ev)
		}
	}
	return pbs(out), nil
}

// auditScan is how many of the newest audit events a detail page searches.
const auditScan = 5000

func (c *Console) grantDetail(ctx context.Context, r *http.Request) (any, error) {
	id := r.URL.Query().Get("id")
	if id == "" {
		return nil, badRequest("id is required: the grant's ID, as kith grants list shows it")
	}
	gs, err := c.grants(ctx)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(gs, func(g *adminv1.Grant) bool { return g.GetId() == id })
	if i < 0 {
		return nil, badRequest("no grant " + id + ": it may have been revoked")
	}
	g := gs[i]
	targets := []string{g.GetId()}
	if g.GetSource() != "cli" {
		targets = append(targets, g.GetSource())
	}
	events, err := c.auditFor(ctx, targets...)
	if err != nil {
		return nil, err
	}
	modes, err := c.modes(ctx)
	if err != nil {
		return nil, err
	}
	return map[string]any{"grant": pb{g}, "mode": modes[g.GetTarget()], "audit": events}, nil
}

func (c *Console) identity(ctx context.Context, r *http.Request) (any, error) {
	id := r.URL.Query().Get("id")
	if id == "" {
		return nil, badRequest("id is required: a SPIFFE ID")
	}
	var es []*adminv1.Entry
	if !strings.HasSuffix(id, "/*") {
		var err error
		if es, err = c.entries(ctx, &adminv1.ListEntriesRequest{SpiffeId: id}); err != nil {
			return nil, err
		}
	}
	gs, err := c.grants(ctx)
	if err != nil {
		return nil, err
	}
	var callers, targets []*adminv1.Grant
	for _, g := range gs {
		if grant.Covers(g.GetTarget(), id) {
			callers = append(callers, g)
		}
		if grant.Covers(g.GetCaller(), id) {
			targets = append(targets, g)
		}
	}
	agents, err := pageAll(ctx, func(ctx context.Context, tok string) ([]*adminv1.Agent, string, error) {
		resp, err := c.cfg.Admin.ListAgents(ctx, &adminv1.ListAgentsRequest{PageSize: pageSize, PageToken: tok})
		return resp.GetAgents(), resp.GetNextPageToken(), err
	})
	if err != nil {
		return nil, err
	}
	// Which agents serve each entry: its parent, or every agent whose selectors include its node selectors.
	served := map[string][]string{}
	for _, e := range es {
		for _, a := range agents {
			if a.GetEvicted() {
				continue
			}
			if a.GetId() == e.GetParentId() || (len(e.GetNodeSelectors()) > 0 && subset(e.GetNodeSelectors(), a.GetSelectors())) {
				served[e.GetId()] = append(served[e.GetId()], a.GetId())
			}
		}
	}
	events, err := c.auditFor(ctx, id)
	if err != nil {
		return nil, err
	}
	modes, err := c.modes(ctx)
	if err != nil {
		return nil, err
	}
	var activity *adminv1.GetIdentityActivityResponse
	if len(es) > 0 {
		if activity, err = c.cfg.Admin.GetIdentityActivity(ctx, &adminv1.GetIdentityActivityRequest{SpiffeId: id}); err != nil {
			return nil, err
		}
	} else {
		activity = &adminv1.GetIdentityActivityResponse{}
	}
	return map[string]any{"id": id, "entries": pbs(es), "served_by": served, "callers": pbs(callers),
		"targets": pbs(targets), "mode": modes[id], "audit": events, "activity": pb{activity}}, nil
}

func subset(want, have []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

func (c *Console) can(ctx context.Context, r *http.Request) (any, error) {
	q := r.URL.Query()
	resp, err := c.cfg.Admin.Can(ctx, &adminv1.CanRequest{Caller: q.Get("caller"), Target: q.Get("target"), Method: q.Get("method"), Path: q.Get("path")})
	if err != nil {
		return nil, err
	}
	return pb{resp}, nil
}

func (c *Console) agents(ctx context.Context, _ *http.Request) (any, error) {
	agents, err := pageAll(ctx, func(ctx context.Context, tok string) ([]*adminv1.Agent, string, error) {
		resp, err := c.cfg.Admin.ListAgents(ctx, &adminv1.ListAgentsRequest{PageSize: pageSize, PageToken: tok})
		return resp.GetAgents(), resp.GetNextPageToken(), err
	})
	if err != nil {
		return nil, err
	}
	st, err := c.cfg.Admin.GetPolicyStatus(ctx, &adminv1.GetPolicyStatusRequest{})
	if err != nil {
		return nil, err
	}
	es, err := c.entries(ctx, &adminv1.ListEntriesRequest{})
	if err != nil {
		return nil, err
	}
	entries := map[string]int{}
	for _, e := range es {
		for _, a := range agents {
			if a.GetId() == e.GetParentId() || (len(e.GetNodeSelectors()) > 0 && subset(e.GetNodeSelectors(), a.GetSelectors())) {
				entries[a.GetId()]++
			}
		}
	}
	return map[string]any{"agents": pbs(agents), "policy": pb{st}, "entries": entries}, nil
}

func (c *Console) authorities(ctx context.Context, _ *http.Request) (any, error) {
	resp, err := c.cfg.Admin.ListAuthorities(ctx, &adminv1.ListAuthoritiesRequest{PageSize: pageSize})
	if err != nil {
		return nil, err
	}
	return map[string]any{"now": c.cfg.Now().UTC().Format(time.RFC3339), "authorities": pbs(resp.GetAuthorities())}, nil
}

func (c *Console) policy(ctx context.Context, _ *http.Request) (any, error) {
	st, err := c.cfg.Admin.GetPolicyStatus(ctx, &adminv1.GetPolicyStatusRequest{})
	if err != nil {
		return nil, err
	}
	h, err := c.cfg.Admin.ListPolicyHistory(ctx, &adminv1.ListPolicyHistoryRequest{Limit: 100, PageSize: 100})
	if err != nil {
		return nil, err
	}
	return map[string]any{"status": pb{st}, "history": pbs(h.GetAttempts())}, nil
}

func (c *Console) audit(ctx context.Context, r *http.Request) (any, error) {
	limit := 200
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 5000 {
			return nil, badRequest("limit must be a number from 1 to 5000")
		}
		limit = n
	}
	evs, err := c.cfg.Admin.ListAuditEvents(ctx, &adminv1.ListAuditEventsRequest{NewestFirst: true, Limit: int32(limit), PageSize: int32(limit)})
	if err != nil {
		return nil, err
	}
	v, err := c.cfg.Admin.VerifyAudit(ctx, &adminv1.VerifyAuditRequest{})
	if err != nil {
		return nil, err
	}
	return map[string]any{"events": pbs(evs.GetEvents()), "verification": pb{v}}, nil
}

func (c *Console) info(ctx context.Context, r *http.Request) (any, error) {
	resp, err := c.cfg.Admin.GetServerInfo(ctx, &adminv1.GetServerInfoRequest{})
	if err != nil {
		return nil, err
	}
	out := map[string]any{"server": pb{resp}, "writable": c.cfg.Sessions != nil}
	if _, ss, ok := c.cfg.Sessions.of(r); ok {
		out["user"], out["csrf"] = ss.user.String(), ss.csrf
	}
	return out, nil
}
