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
			resp, err := withClient(cmd.Context(), e, listAgents)
			if err != nil {
				return err
			}
			return e.print(resp, func() {
				var rows [][]string
				for _, a := range resp.GetAgents() {
					rows = append(rows, []string{a.GetId(), a.GetAttestationType(), fmtTime(a.GetExpiresAt()), strconv.FormatBool(a.GetConnected()), strconv.FormatBool(a.GetEvicted()), strconv.FormatBool(a.GetBanned())})
				}
				e.table([]string{"ID", "ATTESTATION", "SVID EXPIRES", "CONNECTED", "EVICTED", "BANNED"}, rows)
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
				fmt.Fprintf(e.stdout, "ID:           %s\nAttestation:  %s\nSelectors:    %s\nSVID serial:  %s\nSVID expires: %s\nJoined:       %s\nConnected:    %t\nEvicted:      %t\nBanned:       %t\n",
					a.GetId(), a.GetAttestationType(), strings.Join(a.GetSelectors(), ", "), a.GetSerialNumber(), fmtTime(a.GetExpiresAt()), fmtTime(a.GetCreatedAt()), a.GetConnected(), a.GetEvicted(), a.GetBanned())
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
	ban := &cobra.Command{
		Use:   "ban AGENT-ID",
		Short: "Ban an agent: it is evicted and refused when it attests again, even with a new token, until unbanned",
		Args:  exactArgs(1, "AGENT-ID (a SPIFFE ID, see kith agents list)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.BanAgent, &adminv1.BanAgentRequest{Id: args[0]})
			if err != nil {
				return err
			}
			return e.print(resp.GetAgent(), func() {
				fmt.Fprintf(e.stdout, "banned %s\n", resp.GetAgent().GetId())
			})
		},
	}
	unban := &cobra.Command{
		Use:   "unban AGENT-ID",
		Short: "Lift an agent's ban: it may attest again with a new join token",
		Args:  exactArgs(1, "AGENT-ID (a SPIFFE ID, see kith agents list)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.UnbanAgent, &adminv1.UnbanAgentRequest{Id: args[0]})
			if err != nil {
				return err
			}
			return e.print(resp.GetAgent(), func() {
				fmt.Fprintf(e.stdout, "unbanned %s\n", resp.GetAgent().GetId())
			})
		},
	}
	count := &cobra.Command{
		Use:   "count",
		Short: "Print the number of agents, evicted and banned ones included",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := withClient(cmd.Context(), e, listAgents)
			if err != nil {
				return err
			}
			n := len(resp.GetAgents())
			return e.print(struct {
				Count int `json:"count"`
			}{n}, func() {
				fmt.Fprintln(e.stdout, n)
			})
		},
	}
	cmd.AddCommand(list, show, evict, ban, unban, count)
	return cmd
}
