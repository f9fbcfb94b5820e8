package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

func (e *env) requestCommand() *cobra.Command {
	var forDur time.Duration
	var reason string
	cmd := &cobra.Command{
		Use:   "request TARGET --for DURATION --reason TEXT",
		Short: "Ask for a time-bound grant to call TARGET; its owners approve or deny it (kith requests list)",
		Args:  exactArgs(1, "TARGET (a short name such as payments, or a SPIFFE ID)"),
		RunE: e.withAdmin(func(cmd *cobra.Command, args []string, c adminv1.AdminServiceClient) error {
			if forDur <= 0 {
				return usage(fmt.Errorf("--for is required: how long the grant should last, e.g. 2h"))
			}
			if reason == "" {
				return usage(fmt.Errorf("--reason is required: say why, e.g. --reason \"incident 4411\""))
			}
			target, err := resolveID(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			resp, err := c.CreateAccessRequest(cmd.Context(), &adminv1.CreateAccessRequestRequest{Target: target, DurationSeconds: int64(forDur / time.Second), Reason: reason})
			if err != nil {
				return err
			}
			return e.print(resp, func() {
				r := resp.GetRequest()
				if r.GetState() == "approved" {
					fmt.Fprintf(e.stdout, "Request %s approved at once by policy: grant %s to %s for %s.\n", r.GetId(), r.GetGrant(), r.GetTarget(), forDur)
					return
				}
				fmt.Fprintf(e.stdout, "Request %s is pending: an owner of %s approves it with kith approve %s.\n", r.GetId(), r.GetTarget(), r.GetId())
			})
		}),
	}
	durationVar(cmd.Flags(), &forDur, "for", 0, "how long the grant lasts once approved, e.g. 2h")
	cmd.Flags().StringVar(&reason, "reason", "", "why, e.g. \"incident 4411\"")
	return cmd
}

func (e *env) requestsCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "requests", Short: "Access requests: yours, and those to the targets you own"}
	var state string
	list := &cobra.Command{
		Use:   "list [--state pending|approved|denied]",
		Short: "List access requests, newest first",
		Args:  noArgs,
		RunE: e.withAdmin(func(cmd *cobra.Command, _ []string, c adminv1.AdminServiceClient) error {
			resp, err := listAccessRequests(cmd.Context(), c, state)
			if err != nil {
				return err
			}
			return e.print(resp, func() {
				var rows [][]string
				for _, r := range resp.GetRequests() {
					rows = append(rows, []string{r.GetId(), r.GetState(), r.GetCaller(), r.GetTarget(),
						(time.Duration(r.GetDurationSeconds()) * time.Second).String(), r.GetReason(), orDash(r.GetDecidedBy())})
				}
				e.table([]string{"ID", "STATE", "CALLER", "TARGET", "FOR", "REASON", "DECIDED BY"}, rows)
			})
		}),
	}
	list.Flags().StringVar(&state, "state", "", "only requests in this state: pending, approved or denied")
	cmd.AddCommand(list)
	return cmd
}

func (e *env) decideCommand(use, short string, approve bool) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  exactArgs(1, "ID (kith requests list)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !approve && reason == "" {
				return usage(fmt.Errorf("--reason is required: tell the requester why"))
			}
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.DecideAccessRequest, &adminv1.DecideAccessRequestRequest{Id: args[0], Approve: approve, Reason: reason})
			if err != nil {
				return err
			}
			return e.print(resp, func() {
				r := resp.GetRequest()
				if approve {
					fmt.Fprintf(e.stdout, "Approved %s: grant %s lets %s call %s for %s.\n", r.GetId(), r.GetGrant(), r.GetCaller(), r.GetTarget(),
						time.Duration(r.GetDurationSeconds())*time.Second)
					return
				}
				fmt.Fprintf(e.stdout, "Denied %s.\n", r.GetId())
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why")
	return cmd
}

func (e *env) approveCommand() *cobra.Command {
	return e.decideCommand("approve ID [--reason TEXT]", "Approve an access request: a grant for its duration from now", true)
}

func (e *env) denyCommand() *cobra.Command {
	return e.decideCommand("deny ID --reason TEXT", "Deny an access request", false)
}
