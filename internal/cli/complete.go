package cli

import (
	"context"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

// What a completion offers, asked of the server.
type completion int

const (
	identities completion = iota // SPIFFE IDs of entries, and their short names
	grantIDs
	agentIDs
	entryIDs
	grantOrIdentity // kith revoke GRANT-ID, or CALLER TARGET
)

// completePage is how many items a completion asks for: one page, the most the server sends in one.
const completePage = 5000

// completeFrom completes positional arguments from the server (shell completion: `kith completion bash`):
// each argument is of the kind at its position, the last kind repeating. Without a server it offers
// nothing, quickly.
func (e *env) completeFrom(kinds ...completion) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		kind := kinds[min(len(args), len(kinds)-1)]
		ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
		defer cancel()
		c, done, err := e.admin()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer done()
		var out []string
		switch kind {
		case identities, entryIDs:
			// One page (completion must answer at once): the IDs under what was typed, when it is a SPIFFE ID.
			req := &adminv1.ListEntriesRequest{PageSize: completePage}
			if strings.HasPrefix(toComplete, "spiffe://") {
				req.SpiffeIdPrefix = toComplete
			}
			resp, err := c.ListEntries(ctx, req)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			for _, pe := range resp.GetEntries() {
				if kind == entryIDs {
					out = append(out, pe.GetId())
					continue
				}
				out = append(out, pe.GetSpiffeId(), path.Base(pe.GetSpiffeId()))
			}
		case grantIDs, grantOrIdentity:
			if kind == grantOrIdentity {
				ids, _ := e.completeFrom(identities)(cmd, nil, toComplete)
				out = append(out, ids...)
			}
			resp, err := c.ListGrants(ctx, &adminv1.ListGrantsRequest{PageSize: completePage})
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			for _, g := range resp.GetGrants() {
				out = append(out, g.GetId())
			}
		case agentIDs:
			resp, err := c.ListAgents(ctx, &adminv1.ListAgentsRequest{PageSize: completePage})
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			for _, a := range resp.GetAgents() {
				out = append(out, a.GetId())
			}
		}
		slices.Sort(out)
		out = slices.Compact(out)
		out = slices.DeleteFunc(out, func(s string) bool { return !strings.HasPrefix(s, toComplete) })
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeArguments gives the verbs that take IDs their completions.
func (e *env) completeArguments(root *cobra.Command) {
	set := func(names string, f cobra.CompletionFunc) {
		c, _, err := root.Find(strings.Fields(names))
		if err == nil && c != root && c.ValidArgsFunction == nil {
			c.ValidArgsFunction = f
		}
	}
	set("grant", e.completeFrom(identities))
	set("can", e.completeFrom(identities))
	set("revoke", e.completeFrom(grantOrIdentity, identities))
	set("who", e.completeFrom(identities))
	set("entry show", e.completeFrom(entryIDs))
	set("entry update", e.completeFrom(entryIDs))
	set("entry delete", e.completeFrom(entryIDs))
	set("agents show", e.completeFrom(agentIDs))
	set("agents evict", e.completeFrom(agentIDs))
	set("agents ban", e.completeFrom(agentIDs))
	set("agents unban", e.completeFrom(agentIDs))
}
