package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

func init() {
	extraCommands = append(extraCommands, (*env).userCommand)
}

func (e *env) userCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "Manage people: users with an identity spiffe://TD/user/NAME"}
	var labels, roles []string
	var noCode bool
	var codeTTL time.Duration
	add := &cobra.Command{
		Use:   "add NAME [--label key=value]... [--role ROLE]...",
		Short: "Add a user and print a one-time enrolment code for kith login --code",
		Args:  exactArgs(1, "NAME (lowercase letters, digits, '.', '_', '-')"),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := parseLabels(labels)
			if err != nil {
				return usage(err)
			}
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.CreateUser, &adminv1.CreateUserRequest{
				User: &adminv1.User{Name: args[0], Labels: l, Roles: roles}, NoCode: noCode, CodeTtlSeconds: int64(codeTTL / time.Second)})
			if err != nil {
				return err
			}
			return e.print(resp, func() {
				u := resp.GetUser()
				fmt.Fprintf(e.stdout, "User:     %s\nIdentity: %s\n", u.GetName(), u.GetSpiffeId())
				if resp.GetEnrolmentCode() == "" {
					return
				}
				fmt.Fprintf(e.stdout, "Code:     %s (one use, until %s)\n", resp.GetEnrolmentCode(), fmtTime(resp.GetCodeExpiresAt()))
				server := resp.GetLoginUrl()
				if server == "" {
					server = "https://KITH-SERVER:PORT"
				}
				fmt.Fprintf(e.stdout, "Log in:   kith login --server %s --ca-fingerprint %s --code %s\n", server, resp.GetCaFingerprint(), resp.GetEnrolmentCode())
			})
		},
	}
	add.Flags().StringSliceVar(&labels, "label", nil, "label key=value, e.g. team=payments (repeatable); agents see it on the user's identity")
	add.Flags().StringSliceVar(&roles, "role", nil, "role, e.g. admin (repeatable); the kith.admin policy decides what roles may do")
	add.Flags().BoolVar(&noCode, "no-code", false, "make no enrolment code (the user logs in with OpenID Connect)")
	ttlVar(add.Flags(), &codeTTL, "code-ttl", "how long the enrolment code may be used (default: the server's users.code_ttl, 24h)")

	var codeTTL2 time.Duration
	code := &cobra.Command{
		Use:   "code NAME",
		Short: "Make another one-time enrolment code for a user",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.CreateEnrolmentCode, &adminv1.CreateEnrolmentCodeRequest{Name: args[0], TtlSeconds: int64(codeTTL2 / time.Second)})
			if err != nil {
				return err
			}
			return e.print(resp, func() {
				fmt.Fprintf(e.stdout, "Code: %s (one use, until %s)\n", resp.GetEnrolmentCode(), fmtTime(resp.GetExpiresAt()))
			})
		},
	}
	ttlVar(code.Flags(), &codeTTL2, "ttl", "how long the code may be used (default: the server's users.code_ttl, 24h)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List users",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := withClient(cmd.Context(), e, listUsers)
			if err != nil {
				return err
			}
			return e.print(resp, func() {
				var rows [][]string
				for _, u := range resp.GetUsers() {
					rows = append(rows, []string{u.GetName(), userState(u), orDash(strings.Join(u.GetRoles(), ",")), (fmtLabels(u.GetLabels())), u.GetSource()})
				}
				e.table([]string{"NAME", "STATE", "ROLES", "LABELS", "SOURCE"}, rows)
			})
		},
	}
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a user",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.GetUser, &adminv1.GetUserRequest{Name: args[0]})
			if err != nil {
				return err
			}
			return e.print(resp, func() { e.printUser(resp.GetUser()) })
		},
	}
	setDisabled := func(disabled bool) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.SetUserDisabled, &adminv1.SetUserDisabledRequest{Name: args[0], Disabled: disabled})
			if err != nil {
				return err
			}
			return e.print(resp, func() {
				if disabled {
					fmt.Fprintf(e.stdout, "Disabled %s: no renewal, no admin call, and agents deny its calls once they have the change.\n", resp.GetUser().GetSpiffeId())
				} else {
					fmt.Fprintf(e.stdout, "Enabled %s.\n", resp.GetUser().GetSpiffeId())
				}
			})
		}
	}
	disable := &cobra.Command{Use: "disable NAME", Short: "Disable a user at once: renewals and admin calls refused, calls denied by agents", Args: exactArgs(1, "NAME"), RunE: setDisabled(true)}
	enable := &cobra.Command{Use: "enable NAME", Short: "Enable a disabled user", Args: exactArgs(1, "NAME"), RunE: setDisabled(false)}
	cmd.AddCommand(add, code, list, show, disable, enable)
	return cmd
}

func userState(u *adminv1.User) string {
	if u.GetDisabled() {
		return "disabled"
	}
	return "enabled"
}

func (e *env) printUser(u *adminv1.User) {
	fmt.Fprintf(e.stdout, "Name:     %s\nIdentity: %s\nState:    %s\nRoles:    %s\nLabels:   %s\nSource:   %s\nCreated:  %s\n",
		u.GetName(), u.GetSpiffeId(), userState(u), orDash(strings.Join(u.GetRoles(), ", ")), (fmtLabels(u.GetLabels())), u.GetSource(), fmtTime(u.GetCreatedAt()))
}

func listUsers(ctx context.Context, c adminv1.AdminServiceClient) (*adminv1.ListUsersResponse, error) {
	out := &adminv1.ListUsersResponse{}
	err := allPages(func(token string) (*adminv1.ListUsersResponse, error) {
		return c.ListUsers(ctx, &adminv1.ListUsersRequest{PageToken: token})
	}, func(r *adminv1.ListUsersResponse) { out.Users = append(out.Users, r.GetUsers()...) })
	return out, err
}

func listAccessRequests(ctx context.Context, c adminv1.AdminServiceClient, state string) (*adminv1.ListAccessRequestsResponse, error) {
	out := &adminv1.ListAccessRequestsResponse{}
	err := allPages(func(token string) (*adminv1.ListAccessRequestsResponse, error) {
		return c.ListAccessRequests(ctx, &adminv1.ListAccessRequestsRequest{State: state, PageToken: token})
	}, func(r *adminv1.ListAccessRequestsResponse) { out.Requests = append(out.Requests, r.GetRequests()...) })
	return out, err
}
