package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

func init() {
	extraCommands = append(extraCommands, (*env).consoleCommand)
}

func (e *env) consoleCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "console",
		Short: "Sign in to the web console as the logged-in user: prints a one-time link",
		Long: `kith console asks the server (over the admin API, as the user kith login signed in) for a link that
opens a web console session acting as that user: grants, revocations and access-request decisions made
there are authorized by the kith.admin policy like the user's own kith commands, and audited under the
user's SPIFFE ID. The link works once, within a minute; the session lasts 8 hours or until the server
restarts. Without a login the console is read-only.`,
		Args: noArgs,
		RunE: e.withAdmin(func(cmd *cobra.Command, _ []string, c adminv1.AdminServiceClient) error {
			resp, err := c.CreateConsoleLogin(cmd.Context(), &adminv1.CreateConsoleLoginRequest{})
			if err != nil {
				return err
			}
			out := struct {
				URL       string    `json:"url"`
				ExpiresAt time.Time `json:"expires_at"`
			}{resp.GetUrl(), resp.GetExpiresAt().AsTime()}
			return e.print(out, func() {
				fmt.Fprintf(e.stdout, "Open this link within a minute (it works once):\n\n  %s\n", out.URL)
			})
		}),
	}
}
