package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

func (e *env) agentsCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "agents", Short: "Attested node agents"}
	list := &cobra.Command{
		Use:   "list",
		Short: "List agents",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.ListAgents, &adminv1.ListAgentsRequest{})
			if err != nil {
				return err
			}
			return e.print(resp, func() {
				var rows [][]string
				for _, a := range resp.GetAgents() {
					rows = append(rows, []string{a.GetId(), a.GetAttestationType(), fmtTime(a.GetExpiresAt()), strconv.FormatBool(a.GetConnected()), strconv.FormatBool(a.GetEvicted())})
				}
				e.table([]string{"ID", "ATTESTATION", "SVID EXPIRES", "CONNECTED", "EVICTED"}, rows)
			})
		},
	}
	show := &cobra.Command{
		Use:   "show AGENT-ID",
		Short: "Show one agent",
		Args:  exactArgs(1, "AGENT-ID (a SPIFFE ID, see kith agents list)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.GetAgent, &adminv1.GetAgentRequest{Id: args[0]})
			if err != nil {
				return err
			}
			a := resp.GetAgent()
			return e.print(a, func() {
				fmt.Fprintf(e.stdout, "ID:           %s\nAttestation:  %s\nSelectors:    %s\nSVID serial:  %s\nSVID expires: %s\nJoined:       %s\nConnected:    %t\nEvicted:      %t\n",
					a.GetId(), a.GetAttestationType(), strings.Join(a.GetSelectors(), ", "), a.GetSerialNumber(), fmtTime(a.GetExpiresAt()), fmtTime(a.GetCreatedAt()), a.GetConnected(), a.GetEvicted())
			})
		},
	}
	evict := &cobra.Command{
		Use:   "evict AGENT-ID",
		Short: "Evict an agent: it cannot renew or sync and must attest again with a new token",
		Args:  exactArgs(1, "AGENT-ID (a SPIFFE ID, see kith agents list)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.EvictAgent, &adminv1.EvictAgentRequest{Id: args[0]})
			if err != nil {
				return err
			}
			return e.print(resp.GetAgent(), func() {
				fmt.Fprintf(e.stdout, "evicted %s\n", resp.GetAgent().GetId())
			})
		},
	}
	cmd.AddCommand(list, show, evict)
	return cmd
}
