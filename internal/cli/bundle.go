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
				return usage(fmt.Errorf("--format %q: use pem or spiffe", format))
			}
			if e.output == "json" {
				// -o json is the SPIFFE bundle document, as `--format spiffe`.
				if cmd.Flags().Changed("format") && format == "pem" {
					return usage(fmt.Errorf("--format pem and -o json ask for two formats: give one"))
				}
				format = "spiffe"
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
	show.Flags().StringVar(&format, "format", "pem", "pem (X.509 roots) or spiffe (SPIFFE bundle JSON with JWT keys; also -o json)")
	cmd.AddCommand(show)
	cmd.AddCommand(e.federatedBundleCommands()...)
	return cmd
}
