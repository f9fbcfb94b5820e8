package cli

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

func init() {
	extraCommands = append(extraCommands, (*env).k8sCommand)
}

// k8sStatus is what kith k8s status prints (-o json).
type k8sStatus struct {
	Clusters     []k8sCluster    `json:"clusters"`
	Identities   []k8sIdentity   `json:"identities"`
	Grants       []k8sGrant      `json:"grants"`
	MeshPolicies []k8sMeshPolicy `json:"mesh_policies"`
}

// k8sMeshPolicy is what one SMI TrafficTarget or Istio AuthorizationPolicy became.
type k8sMeshPolicy struct {
	Refused   string `json:"refused,omitempty"` // why the cluster's controller refused the object
	Source    string `json:"source"`            // smi:<ns>/<name> or istio:<ns>/<name>
	Grants    int    `json:"grants"`
	DenyRules int    `json:"deny_rules"`
}

type k8sCluster struct {
	Name   string     `json:"name"`
	Agents []k8sAgent `json:"agents"`
	// Watched: the server's controllers watch this cluster's KithIdentity and KithGrant resources; Synced:
	// their informers have listed it once.
	Watched bool `json:"watched"`
	Synced  bool `json:"synced"`
}

type k8sAgent struct {
	Node      string `json:"node"`
	ID        string `json:"id"`
	Entries   int    `json:"entries"`
	Connected bool   `json:"connected"`
	Evicted   bool   `json:"evicted"`
}

type k8sIdentity struct {
	Name        string `json:"name"`
	Template    string `json:"spiffeIDTemplate,omitempty"`
	PodsMatched int    `json:"podsMatched"`
	Entries     int    `json:"entries"`
	Example     string `json:"example"` // one SPIFFE ID it gave
	LastError   string `json:"lastError,omitempty"`
}

type k8sGrant struct {
	Resource string   `json:"resource"` // namespace/name
	ID       string   `json:"id,omitempty"`
	Refused  string   `json:"refused,omitempty"` // why the KithGrant has no grant
	Caller   string   `json:"caller"`
	Target   string   `json:"target"`
	Methods  []string `json:"methods,omitempty"`
	Paths    []string `json:"paths,omitempty"`
}

func (e *env) k8sCommand() *cobra.Command {
	k := &cobra.Command{Use: "k8s", Short: "What Kith keeps for Kubernetes: clusters, agents by node, identities, grants from resources"}
	status := &cobra.Command{
		Use:   "status",
		Short: "Clusters and their agents by node, entries by KithIdentity, grants from KithGrant resources",
		Args:  noArgs,
		RunE: e.withAdmin(func(cmd *cobra.Command, _ []string, c adminv1.AdminServiceClient) error {
			ctx := cmd.Context()
			agents, err := listAgents(ctx, c)
			if err != nil {
				return err
			}
			entries, err := listEntries(ctx, c, &adminv1.ListEntriesRequest{Source: "k8s:"})
			if err != nil {
				return err
			}
			grants, err := listGrants(ctx, c, &adminv1.ListGrantsRequest{})
			if err != nil {
				return err
			}
			// What the controllers know (pods matched, refusals); a server older than the call has not it.
			kube, err := c.GetKubernetesStatus(ctx, &adminv1.GetKubernetesStatusRequest{})
			if status.Code(err) == codes.Unimplemented {
				kube, err = &adminv1.GetKubernetesStatusResponse{}, nil
			}
			if err != nil {
				return err
			}
			st := k8sStatusOf(agents.GetAgents(), entries.GetEntries(), grants.GetGrants(), kube.GetClusters())
			return e.print(st, func() { e.k8sStatusText(st) })
		}),
	}
	k.AddCommand(status)
	return k
}

func k8sStatusOf(agents []*adminv1.Agent, entries []*adminv1.Entry, grants []*adminv1.Grant, watched []*adminv1.KubernetesCluster) k8sStatus {
	perParent := map[string]int{}
	ids := map[string]*k8sIdentity{}
	for _, en := range entries {
		perParent[en.GetParentId()]++
		// k8s:kithidentity/<identity>/<namespace>/<pod>
		rest, ok := strings.CutPrefix(en.GetSource(), "k8s:kithidentity/")
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(rest, "/")
		if ids[name] == nil {
			ids[name] = &k8sIdentity{Name: name, Example: en.GetSpiffeId()}
		}
		ids[name].Entries++
	}
	clusters := map[string]*k8sCluster{}
	for _, a := range agents {
		if a.GetAttestationType() != "k8s_psat" {
			continue
		}
		ag := k8sAgent{ID: a.GetId(), Entries: perParent[a.GetId()], Connected: a.GetConnected(), Evicted: a.GetEvicted()}
		var cluster string
		for _, s := range a.GetSelectors() {
			if v, ok := strings.CutPrefix(s, "k8s_psat:cluster:"); ok {
				cluster = v
			}
			if v, ok := strings.CutPrefix(s, "k8s_psat:agent_node_name:"); ok {
				ag.Node = v
			}
		}
		if clusters[cluster] == nil {
			clusters[cluster] = &k8sCluster{Name: cluster}
		}
		clusters[cluster].Agents = append(clusters[cluster].Agents, ag)
	}
	var refused []k8sGrant
	for _, w := range watched {
		if clusters[w.GetName()] == nil {
			clusters[w.GetName()] = &k8sCluster{Name: w.GetName()}
		}
		clusters[w.GetName()].Watched, clusters[w.GetName()].Synced = true, w.GetSynced()
		for _, ki := range w.GetIdentities() {
			if ids[ki.GetName()] == nil {
				ids[ki.GetName()] = &k8sIdentity{Name: ki.GetName()}
			}
			id := ids[ki.GetName()]
			id.Template, id.PodsMatched, id.LastError = ki.GetSpiffeIdTemplate(), int(ki.GetPodsMatched()), ki.GetLastError()
		}
		for _, kg := range w.GetGrants() {
			if kg.GetRefused() != "" {
				refused = append(refused, k8sGrant{Resource: kg.GetNamespace() + "/" + kg.GetName(), Refused: kg.GetRefused()})
			}
		}
	}
	st := k8sStatus{Clusters: []k8sCluster{}, Identities: []k8sIdentity{}, Grants: []k8sGrant{}}
	for _, name := range slices.Sorted(maps.Keys(clusters)) {
		cl := clusters[name]
		slices.SortFunc(cl.Agents, func(a, b k8sAgent) int { return cmp.Or(cmp.Compare(a.Node, b.Node), cmp.Compare(a.ID, b.ID)) })
		st.Clusters = append(st.Clusters, *cl)
	}
	for _, name := range slices.Sorted(maps.Keys(ids)) {
		st.Identities = append(st.Identities, *ids[name])
	}
	for _, g := range grants {
		if res, ok := strings.CutPrefix(g.GetSource(), "k8s:"); ok {
			st.Grants = append(st.Grants, k8sGrant{Resource: res, ID: g.GetId(), Caller: g.GetCaller(), Target: g.GetTarget(), Methods: g.GetMethods(), Paths: g.GetPaths()})
		}
	}
	st.Grants = append(st.Grants, refused...)
	slices.SortFunc(st.Grants, func(a, b k8sGrant) int { return cmp.Compare(a.Resource, b.Resource) })
	mesh := map[string]*k8sMeshPolicy{}
	for _, g := range grants {
		if !strings.HasPrefix(g.GetSource(), "smi:") && !strings.HasPrefix(g.GetSource(), "istio:") {
			continue
		}
		p := mesh[g.GetSource()]
		if p == nil {
			p = &k8sMeshPolicy{Source: g.GetSource()}
			mesh[g.GetSource()] = p
		}
		if g.GetDeny() {
			p.DenyRules++
		} else {
			p.Grants++
		}
	}
	// Objects the controllers refused have no grants: they come from the controllers' status.
	for _, cl := range watched {
		for _, mp := range cl.GetMeshPolicies() {
			why, refused := strings.CutPrefix(mp.GetEffect(), "refused: ")
			if !refused {
				continue
			}
			kind, ref, _ := strings.Cut(mp.GetObject(), " ")
			src := "smi:" + ref
			if kind == "AuthorizationPolicy" {
				src = "istio:" + ref
			}
			if mesh[src] == nil {
				mesh[src] = &k8sMeshPolicy{Source: src}
			}
			mesh[src].Refused = why
		}
	}
	st.MeshPolicies = []k8sMeshPolicy{}
	for _, src := range slices.Sorted(maps.Keys(mesh)) {
		st.MeshPolicies = append(st.MeshPolicies, *mesh[src])
	}
	return st
}

func (e *env) k8sStatusText(st k8sStatus) {
	w := e.stdout
	if len(st.Clusters) == 0 {
		fmt.Fprintln(w, "No k8s_psat agents yet (node_attestors.k8s_psat in the server's config; docs/kubernetes.md).")
	}
	for _, cl := range st.Clusters {
		watch := ""
		switch {
		case cl.Watched && cl.Synced:
			watch = ", KithIdentity and KithGrant resources watched"
		case cl.Watched:
			watch = ", KithIdentity and KithGrant resources watched (still listing them)"
		}
		fmt.Fprintf(w, "Cluster %s: %d agents%s\n", cl.Name, len(cl.Agents), watch)
		if len(cl.Agents) == 0 {
			continue
		}
		rows := make([][]string, 0, len(cl.Agents))
		for _, a := range cl.Agents {
			state := "connected"
			switch {
			case a.Evicted:
				state = "evicted"
			case !a.Connected:
				state = "not connected"
			}
			rows = append(rows, []string{orDash(a.Node), a.ID, fmt.Sprint(a.Entries), state})
		}
		e.table([]string{"NODE", "AGENT", "ENTRIES", "STATE"}, rows)
	}
	fmt.Fprintf(w, "\nIdentities (KithIdentity): %d\n", len(st.Identities))
	if len(st.Identities) > 0 {
		rows := make([][]string, 0, len(st.Identities))
		for _, id := range st.Identities {
			rows = append(rows, []string{id.Name, fmt.Sprint(id.PodsMatched), fmt.Sprint(id.Entries), orDash(id.Example), orDash(id.LastError)})
		}
		e.table([]string{"KITHIDENTITY", "PODS", "ENTRIES", "E.G.", "LAST ERROR"}, rows)
	}
	fmt.Fprintf(w, "\nGrants from KithGrant resources: %d\n", len(st.Grants))
	if len(st.Grants) > 0 {
		rows := make([][]string, 0, len(st.Grants))
		for _, g := range st.Grants {
			id := g.ID
			if g.Refused != "" {
				id = "refused: " + g.Refused
			}
			rows = append(rows, []string{g.Resource, id, orDash(g.Caller), orDash(g.Target), orDash(strings.Join(g.Methods, ",")), orDash(strings.Join(g.Paths, ","))})
		}
		e.table([]string{"RESOURCE", "GRANT", "CALLER", "TARGET", "METHODS", "PATHS"}, rows)
	}
	if len(st.MeshPolicies) > 0 {
		fmt.Fprintf(w, "\nMesh policies (SMI, Istio): %d (a refused one has a KithRefused event: kubectl get events)\n", len(st.MeshPolicies))
		rows := make([][]string, 0, len(st.MeshPolicies))
		for _, p := range st.MeshPolicies {
			rows = append(rows, []string{p.Source, fmt.Sprint(p.Grants), fmt.Sprint(p.DenyRules), orDash(p.Refused)})
		}
		e.table([]string{"POLICY", "GRANTS", "DENY RULES", "REFUSED"}, rows)
	}
}
