package cli

import (
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

func (e *env) auditCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "The append-only, hash-chained audit log"}
	var after int64
	var limit int32
	list := &cobra.Command{
		Use:   "list [--after SEQ] [--limit N]",
		Short: "List audit events",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.ListAuditEvents, &adminv1.ListAuditEventsRequest{AfterSeq: after, Limit: limit})
			if err != nil {
				return err
			}
			return e.print(resp, func() {
				var rows [][]string
				for _, ev := range resp.GetEvents() {
					rows = append(rows, []string{strconv.FormatInt(ev.GetSeq(), 10), fmtTime(ev.GetTime()), ev.GetActor(), ev.GetAction(), ev.GetTarget()})
				}
				e.table([]string{"SEQ", "TIME", "ACTOR", "ACTION", "TARGET"}, rows)
			})
		},
	}
	list.Flags().Int64Var(&after, "after", 0, "only events after this sequence number")
	list.Flags().Int32Var(&limit, "limit", 0, "at most this many events (0: all)")

	verify := &cobra.Command{
		Use:   "verify",
		Short: "Check the audit log's hash chain; exits 1 if any row was changed or removed",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.VerifyAudit, &adminv1.VerifyAuditRequest{})
			if err != nil {
				return err
			}
			err = e.print(resp, func() {
				if resp.GetOk() {
					fmt.Fprintf(e.stdout, "audit log intact: %d events, head %s\n", resp.GetCount(), hex.EncodeToString(resp.GetHeadHash()))
				}
			})
			if err != nil {
				return err
			}
			if !resp.GetOk() {
				return &exitError{code: 1, err: fmt.Errorf("audit log broken at event %d: %s", resp.GetBrokenAt(), resp.GetProblem())}
			}
			return nil
		},
	}
	cmd.AddCommand(list, verify)
	return cmd
}
