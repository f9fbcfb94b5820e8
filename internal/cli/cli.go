// Package cli implements the kith command line: one file per verb, every verb runnable from tests through
// Main(ctx, args, stdout, stderr).
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

// Version is the kith version, set at build time with -ldflags "-X github.com/kithid/kith/internal/cli.Version=...".
var Version = "dev"

// DefaultAdminSocket is where the CLI looks for the server's admin API.
const DefaultAdminSocket = "/var/lib/kith/admin.sock"

// Exit codes: 0 success, 1 failure (or "no" from a verb that answers yes or no, such as `kith can`),
// 2 a usage error (unknown verb or flag, wrong arguments, bad flag value).
const exitUsage = 2

// usage marks err as a mistake in how a verb was called: kith exits 2.
func usage(err error) error { return &exitError{code: exitUsage, err: err} }

// noArgs refuses arguments to a verb that takes none, as a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usage(fmt.Errorf("%s takes no arguments, got %q (see %s --help)", cmd.CommandPath(), args[0], cmd.CommandPath()))
	}
	return nil
}

// exitError carries a specific exit code (e.g. `kith can` exits 1 for "denied").
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return ""
	}
	return e.err.Error()
}

// env holds what every verb shares: output streams, the output format and the admin socket.
type env struct {
	stdout, stderr io.Writer
	output         string
	adminSocket    string
	getenv         func(string) string
	strict         bool // --strict on verbs that caution
	// server is --server (env KITH_SERVER): the admin TCP listener to use with the saved login.
	server string
	// socketExplicit is set when --admin-socket or KITH_ADMIN_SOCKET names the socket: it wins over a login.
	socketExplicit bool
}

// Main runs the kith command line and returns the process exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return MainEnv(ctx, args, stdout, stderr, os.Getenv)
}

// MainEnv is Main with an explicit environment lookup, for tests.
func MainEnv(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	return mainIn(ctx, args, os.Stdin, stdout, stderr, getenv)
}

// mainIn is MainEnv reading standard input from stdin (kith import smi -).
func mainIn(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	e := &env{stdout: stdout, stderr: stderr, getenv: getenv}
	root := e.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	if !errors.As(err, &ee) && !isStatus(err) {
		if name, ok := strings.CutPrefix(err.Error(), "unknown command \""); ok {
			// cobra's own message for an unknown top-level verb; say it our way, as a usage error.
			name, _, _ = strings.Cut(name, "\"")
			err = usage(unknownCommand(root, name))
		}
	}
	if errors.As(err, &ee) {
		if ee.err != nil && ee.err.Error() != "" {
			fmt.Fprintln(stderr, "kith: "+ee.err.Error())
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "kith: "+describe(err, e.adminSocket))
	return 1
}

func (e *env) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "kith",
		Short:         "Kith: identities and certificates for services and people, and who may call whom",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version().String(),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usage(fmt.Errorf("%w (see %s --help)", err, cmd.CommandPath()))
	})
	sock := e.getenv("KITH_ADMIN_SOCKET")
	if sock == "" {
		sock = DefaultAdminSocket
	}
	root.PersistentFlags().StringVarP(&e.output, "output", "o", "table", "output format: table or json")
	root.PersistentFlags().StringVar(&e.adminSocket, "admin-socket", sock, "server admin API socket (env KITH_ADMIN_SOCKET)")
	root.PersistentFlags().StringVar(&e.server, "server", e.getenv("KITH_SERVER"), "the server's admin TCP listener, https://host:port, used with your login (env KITH_SERVER; default: the server of your last kith login)")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if e.output != "table" && e.output != "json" {
			return usage(fmt.Errorf("-o %q: use table or json", e.output))
		}
		e.socketExplicit = e.getenv("KITH_ADMIN_SOCKET") != "" || cmd.Flags().Changed("admin-socket")
		return nil
	}
	root.AddCommand(
		e.serverCommand(),
		e.entryCommand(),
		e.tokenCommand(),
		e.svidCommand(),
		e.bundleCommand(),
		e.federationCommand(),
		e.caCommand(),
		e.auditCommand(),
		e.agentsCommand(),
	)
	for _, extra := range extraCommands {
		root.AddCommand(extra(e))
	}
	refuseUnknownSubcommands(root)
	e.completeArguments(root)
	for _, c := range root.Commands() {
		switch c.Name() {
		case "server", "agent", "dev":
			hideGlobalFlags(c)
		}
	}
	return root
}

// hideGlobalFlags leaves the CLI's global flags (-o, --admin-socket) out of the help of a long-running
// command they do not apply to; its subcommands (e.g. `kith server healthcheck`) still list them.
func hideGlobalFlags(cmd *cobra.Command) {
	help := cmd.HelpFunc()
	cmd.SetHelpFunc(func(c *cobra.Command, args []string) {
		if c == cmd {
			c.InheritedFlags().VisitAll(func(f *pflag.Flag) { f.Hidden = true })
		}
		help(c, args)
	})
}

// refuseUnknownSubcommands makes every group of verbs (`kith entry`, `kith policy`, …) refuse a
// subcommand it does not have, with the nearest one it has, instead of printing its help and exiting 0.
// A group called with no subcommand prints its help and exits 2.
func refuseUnknownSubcommands(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		refuseUnknownSubcommands(c)
	}
	if !cmd.HasSubCommands() || cmd.Runnable() || !cmd.HasParent() {
		return
	}
	cmd.Args = cobra.ArbitraryArgs
	cmd.SuggestionsMinimumDistance = 2
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			c.SetOut(c.ErrOrStderr())
			_ = c.Help()
			return usage(fmt.Errorf("%s needs a subcommand: %s", c.CommandPath(), strings.Join(subcommandNames(c), ", ")))
		}
		return usage(unknownCommand(c, args[0]))
	}
}

// unknownCommand says that name is not a subcommand of c, and which one was probably meant.
func unknownCommand(c *cobra.Command, name string) error {
	msg := fmt.Sprintf("unknown command %q for %q", name, c.CommandPath())
	if s := c.SuggestionsFor(name); len(s) > 0 {
		msg += fmt.Sprintf("; did you mean %q?", s[0])
	} else {
		msg += fmt.Sprintf("; %s has: %s", c.CommandPath(), strings.Join(subcommandNames(c), ", "))
	}
	return errors.New(msg)
}

func subcommandNames(c *cobra.Command) []string {
	var names []string
	for _, s := range c.Commands() {
		if s.IsAvailableCommand() {
			names = append(names, s.Name())
		}
	}
	return names
}

// extraCommands lets verbs in other files register themselves.
var extraCommands []func(*env) *cobra.Command

// maxRecvMsgSize is the largest admin API response the CLI takes. Lists come in pages of at most
// 2 MiB, but one answer can be larger than gRPC's default 4 MiB: policy status names every agent with
// its revision, a policy history entry carries a rejection's error text.
const maxRecvMsgSize = 64 << 20

// admin dials the admin API: the admin socket, unless the caller is logged in (kith login) and names no
// socket, or names a server (--server); then the admin TCP listener with the user's SVID.
func (e *env) admin() (adminv1.AdminServiceClient, func(), error) {
	if e.remote() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return e.remoteAdmin(ctx)
	}
	if _, err := os.Stat(e.adminSocket); err != nil {
		return nil, nil, fmt.Errorf("admin socket %s: %w (is `kith server` running? set --admin-socket or KITH_ADMIN_SOCKET)", e.adminSocket, errors.Unwrap(err))
	}
	sock, err := filepath.Abs(e.adminSocket) // gRPC's unix:// target takes an absolute path only
	if err != nil {
		return nil, nil, fmt.Errorf("admin socket %s: %w", e.adminSocket, err)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize)))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to admin socket %s: %w", e.adminSocket, err)
	}
	return adminv1.NewAdminServiceClient(conn), func() { conn.Close() }, nil
}

// remote reports whether admin calls go to the admin TCP listener with the saved login.
func (e *env) remote() bool {
	if e.server != "" {
		return true
	}
	if e.socketExplicit {
		return false
	}
	dir, err := e.configDir()
	if err != nil {
		return false
	}
	_, err = os.Stat(filepath.Join(dir, loginFile))
	return err == nil
}

// isStatus reports whether err came from the admin API.
func isStatus(err error) bool {
	_, ok := status.FromError(err)
	return ok
}

// describe turns an error into the one line the user sees.
func describe(err error, socket string) string {
	s, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	switch s.Code() {
	case codes.Unavailable:
		if m := s.Message(); strings.Contains(m, "before server preface") || strings.Contains(m, "reading server preface") {
			// The server disconnects callers whose uid and gid it does not allow before saying anything.
			return fmt.Sprintf("the server on %s closed the connection: it refuses uid %d gid %d unless they are in its admin.allowed_uids or admin.allowed_gids (default: the server's uid and root); run as one of those or ask to be added", socket, os.Getuid(), os.Getgid())
		}
		return fmt.Sprintf("cannot reach the server on %s: %s (is `kith server` running? set --admin-socket or KITH_ADMIN_SOCKET)", socket, s.Message())
	case codes.PermissionDenied:
		return "permission denied: " + s.Message()
	default:
		return s.Message()
	}
}

// printJSON writes v as indented JSON.
func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes rows under a header, tab-aligned.
func (e *env) table(header []string, rows [][]string) {
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(w, strings.Join(r, "\t"))
	}
	w.Flush()
}

// call dials the admin socket, makes one RPC and closes the connection:
// call(ctx, e, adminv1.AdminServiceClient.GetBundle, &adminv1.GetBundleRequest{}).
func call[Req, Resp any](ctx context.Context, e *env, rpc func(adminv1.AdminServiceClient, context.Context, Req, ...grpc.CallOption) (Resp, error), req Req, opts ...grpc.CallOption) (Resp, error) {
	c, done, err := e.admin()
	if err != nil {
		var zero Resp
		return zero, err
	}
	defer done()
	return rpc(c, ctx, req, opts...)
}

// withClient dials the admin socket, calls f with the client and closes the connection.
func withClient[R any](ctx context.Context, e *env, f func(context.Context, adminv1.AdminServiceClient) (R, error)) (R, error) {
	c, done, err := e.admin()
	if err != nil {
		var zero R
		return zero, err
	}
	defer done()
	return f(ctx, c)
}

// withAdmin makes a cobra RunE of a verb that needs several admin RPCs: it dials the admin socket, runs the
// verb with the client and closes the connection.
func (e *env) withAdmin(run func(cmd *cobra.Command, args []string, c adminv1.AdminServiceClient) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, done, err := e.admin()
		if err != nil {
			return err
		}
		defer done()
		return run(cmd, args, c)
	}
}
