package cli

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

func (e *env) caCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "The certificate authority: its keys and their rotation"}
	show := &cobra.Command{
		Use:   "show",
		Short: "List roots, signing intermediates and JWT keys with state and expiry; the upstream, next rotation and last upstream error",
		Args:  noArgs,
		RunE: e.withAdmin(func(cmd *cobra.Command, _ []string, c adminv1.AdminServiceClient) error {
			resp, err := listAuthorities(cmd.Context(), c)
			if err != nil {
				return err
			}
			if e.output != "json" {
				st, err := c.GetCAStatus(cmd.Context(), &adminv1.GetCAStatusRequest{})
				if err != nil {
					return err
				}
				e.printCAStatus(st, time.Now())
				fmt.Fprintln(e.stdout)
			}
			return e.printAuthorities(resp.GetAuthorities())
		}),
	}
	var root bool
	rotate := &cobra.Command{
		Use:   "rotate [--root]",
		Short: "Prepare and activate a new signing intermediate and JWT key now; --root starts a root rotation",
		Long: "Without --root, a new intermediate and JWT key are prepared and activated at once (the root is unchanged, so\n" +
			"existing SVIDs keep verifying). With --root, a new root is published in the bundle now and signing switches\n" +
			"to it after ca.root_overlap, so every relying party holds it first.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.RotateCA, &adminv1.RotateCARequest{Root: root})
			if err != nil {
				return err
			}
			return e.printAuthorities(resp.GetAuthorities())
		},
	}
	rotate.Flags().BoolVar(&root, "root", false, "rotate the root CA (with an overlap before the new root signs)")
	cmd.AddCommand(show, rotate)
	return cmd
}

func (e *env) printAuthorities(as []*adminv1.Authority) error {
	return e.print(&adminv1.ListAuthoritiesResponse{Authorities: as}, func() {
		// Servers sharing a store each sign with an intermediate of their own: say whose.
		servers := slices.ContainsFunc(as, func(a *adminv1.Authority) bool { return a.GetOwner() != "" })
		var rows [][]string
		for _, a := range as {
			row := []string{a.GetKind(), a.GetState(), a.GetId(), fmtTime(a.GetNotBefore()), fmtTime(a.GetNotAfter()), strconv.FormatBool(a.GetPublished())}
			if servers {
				row = append(row, a.GetOwner())
			}
			rows = append(rows, row)
		}
		header := []string{"KIND", "STATE", "ID", "NOT BEFORE", "NOT AFTER", "IN BUNDLE"}
		if servers {
			header = append(header, "SERVER")
		}
		e.table(header, rows)
	})
}
