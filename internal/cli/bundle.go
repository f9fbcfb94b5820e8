package cli

import (
	"encoding/pem"
	"fmt"

	"github.com/spf13/cobra"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

func (e *env) bundleCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "bundle", Short: "The trust bundle: X.509 roots and JWT keys"}
	var format string
	show := &cobra.Command{
		Use:   "show [--format pem|spiffe]",
		Short: "Print the trust bundle",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "pem" && format != "spiffe" {
				return fmt.Errorf("--format %q: use pem or spiffe", format)
			}
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.GetBundle, &adminv1.GetBundleRequest{})
			if err != nil {
				return err
			}
			if format == "spiffe" {
				_, err := fmt.Fprintln(e.stdout, string(resp.GetSpiffeBundle()))
				return err
			}
			for _, der := range resp.GetX509Authorities() {
				if err := pem.Encode(e.stdout, &pem.Block{Type: "CERTIFICATE", Bytes: der}); err != nil {
					return err
				}
			}
			return nil
		},
	}
	show.Flags().StringVar(&format, "format", "pem", "pem (X.509 roots) or spiffe (SPIFFE bundle JSON with JWT keys)")
	cmd.AddCommand(show)
	return cmd
}
