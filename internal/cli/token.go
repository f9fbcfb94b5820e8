package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

func (e *env) tokenCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage one-time join tokens for agents; mint your own JWT-SVID (kith token jwt)"}
	var name string
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create [--name NAME] [--ttl DURATION]",
		Short: "Create a join token; an agent joins with `kith agent --join-token SECRET`",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.CreateJoinToken, &adminv1.CreateJoinTokenRequest{Name: name, TtlSeconds: int64(ttl / time.Second)})
			if err != nil {
				return err
			}
			return e.print(resp, func() {
				t := resp.GetToken()
				fmt.Fprintf(e.stdout, "Token:    %s\nName:     %s\nAgent ID: %s\nExpires:  %s\n", resp.GetSecret(), orDash(t.GetName()), t.GetAgentId(), fmtTime(t.GetExpiresAt()))
			})
		},
	}
	create.Flags().StringVar(&name, "name", "", "token name; the agent joins as spiffe://TD/kith/agent/join_token/NAME and entries can target it with --node-selector join_token:name:NAME; a name is free again once its token expired unused or its agent was evicted")
	ttlVar(create.Flags(), &ttl, "ttl", "how long the token may be used (default: the server's join_token.ttl)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List join tokens (never their secrets)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := withClient(cmd.Context(), e, listJoinTokens)
			if err != nil {
				return err
			}
			return e.print(resp, func() {
				var rows [][]string
				for _, t := range resp.GetTokens() {
					rows = append(rows, []string{t.GetId(), orDash(t.GetName()), fmtTime(t.GetExpiresAt()), fmtTime(t.GetUsedAt()), orDash(t.GetUsedBy())})
				}
				e.table([]string{"ID", "NAME", "EXPIRES", "USED", "USED BY"}, rows)
			})
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke TOKEN-ID",
		Short: "Revoke an unused join token: its secret can no longer be used (a used token's agent is cut off with kith agents ban)",
		Args:  exactArgs(1, "TOKEN-ID (the ID column of kith token list, not the secret)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.RevokeJoinToken, &adminv1.RevokeJoinTokenRequest{Id: args[0]})
			if err != nil {
				return err
			}
			return e.print(resp.GetToken(), func() {
				fmt.Fprintf(e.stdout, "revoked %s\n", resp.GetToken().GetId())
			})
		},
	}
	var audience []string
	var jwtTTL time.Duration
	jwt := &cobra.Command{
		Use:   "jwt --audience AUDIENCE",
		Short: "Print a JWT-SVID of your own identity (kith login) for HTTP bearer use",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(audience) == 0 {
				return usage(fmt.Errorf("--audience is required: the service that will receive the token"))
			}
			l, err := e.loadLogin()
			if err != nil {
				return fmt.Errorf("kith token jwt mints for your own identity: log in first (kith login): %w", err)
			}
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.MintJWTSVID, &adminv1.MintJWTSVIDRequest{SpiffeId: l.state.SPIFFEID, Audience: audience, TtlSeconds: int64(jwtTTL / time.Second)})
			if err != nil {
				return err
			}
			return e.print(resp, func() { fmt.Fprintln(e.stdout, resp.GetToken()) })
		},
	}
	jwt.Flags().StringSliceVar(&audience, "audience", nil, "audience of the token (repeatable)")
	ttlVar(jwt.Flags(), &jwtTTL, "ttl", "token lifetime (default: the server's svid.jwt_ttl)")
	cmd.AddCommand(create, list, revoke, jwt)
	return cmd
}
