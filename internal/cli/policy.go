package cli

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/gitsync"
)

func init() {
	extraCommands = append(extraCommands, (*env).policyCommand)
}

func (e *env) policyCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Policy from Git: status, history, sync, rollback, unpin, check"}
	cmd.AddCommand(e.policyStatusCommand(), e.policyHistoryCommand(), e.policySyncCommand(),
		e.policyRollbackCommand(), e.policyUnpinCommand(), e.policyCheckCommand())
	return cmd
}

func policyTime(t interface{ AsTime() time.Time }) string {
	if t == nil || t.AsTime().IsZero() || t.AsTime().Unix() == 0 {
		return "-"
	}
	return t.AsTime().UTC().Format(time.RFC3339)
}

func (e *env) policyStatusCommand() *cobra.Command {
	return &cobra.Command{
		Use: "status", Short: "Show the active policy revision, the last attempt and what each agent enforces", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := call(cmd.Context(), e, adminv1.AdminServiceClient.GetPolicyStatus, &adminv1.GetPolicyStatusRequest{})
			if err != nil {
				return err
			}
			return e.print(st, func() { e.policyStatusText(st) })
		},
	}
}

func (e *env) policyStatusText(st *adminv1.GetPolicyStatusResponse) {
	w := tabwriter.NewWriter(e.stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintf(w, "active revision:\t%s\n", st.GetActiveRevision())
	if st.GetSource() != "" {
		fmt.Fprintf(w, "source:\t%s\n", st.GetSource())
	}
	if st.GetPinnedRevision() != "" {
		fmt.Fprintf(w, "pinned:\t%s (rolled back; `kith policy unpin` to follow the repository again)\n", st.GetPinnedRevision())
	}
	if a := st.GetLastAttempt(); a != nil {
		fmt.Fprintf(w, "last attempt:\t%s %s at %s\n", a.GetRevision(), a.GetStatus(), policyTime(a.GetCreatedAt()))
		if a.GetError() != "" {
			fmt.Fprintf(w, "error:\t%s\n", a.GetError())
		}
	}
	w.Flush()
	if len(st.GetAgents()) > 0 {
		fmt.Fprintln(e.stdout)
		w = tabwriter.NewWriter(e.stdout, 0, 2, 2, ' ', 0)
		fmt.Fprintln(w, "AGENT\tREVISION\tSINCE")
		for _, a := range st.GetAgents() {
			line := fmt.Sprintf("%s\t%s\t%s", a.GetAgentId(), a.GetRevision(), policyTime(a.GetSince()))
			if a.GetError() != "" {
				line += "\trefused newer: " + a.GetError()
			}
			fmt.Fprintln(w, line)
		}
		w.Flush()
	}
}

func (e *env) policyHistoryCommand() *cobra.Command {
	var limit int32
	cmd := &cobra.Command{
		Use: "history", Short: "List policy revisions built or rejected, newest first", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			h, err := withClient(cmd.Context(), e, func(ctx context.Context, c adminv1.AdminServiceClient) (*adminv1.ListPolicyHistoryResponse, error) {
				return listPolicyHistory(ctx, c, limit)
			})
			if err != nil {
				return err
			}
			return e.print(h, func() {
				w := tabwriter.NewWriter(e.stdout, 0, 2, 2, ' ', 0)
				fmt.Fprintln(w, "REVISION\tSTATUS\tAT\tERROR")
				for _, a := range h.GetAttempts() {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", a.GetRevision(), a.GetStatus(), policyTime(a.GetCreatedAt()), firstLine(a.GetError()))
				}
				w.Flush()
			})
		},
	}
	cmd.Flags().Int32Var(&limit, "limit", 50, "how many revisions to show")
	return cmd
}

func firstLine(s string) string {
	for i, r := range s {
		if r == '\n' {
			return s[:i] + " …"
		}
	}
	return s
}

func (e *env) policySyncCommand() *cobra.Command {
	return &cobra.Command{
		Use: "sync", Short: "Fetch the policy repository now", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := call(cmd.Context(), e, adminv1.AdminServiceClient.SyncPolicy, &adminv1.SyncPolicyRequest{})
			if err != nil {
				return err
			}
			if r.GetError() != "" {
				return fmt.Errorf("policy sync: %s", r.GetError())
			}
			fmt.Fprintf(e.stdout, "policy repository at %s\n", r.GetRevision())
			return nil
		},
	}
}

func (e *env) policyRollbackCommand() *cobra.Command {
	return &cobra.Command{
		Use: "rollback REVISION", Short: "Put an earlier good revision (or an unambiguous prefix of it, 4+ characters) in force until the next commit or `kith policy unpin`",
		Args: exactArgs(1, "REVISION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := call(cmd.Context(), e, adminv1.AdminServiceClient.RollbackPolicy, &adminv1.RollbackPolicyRequest{Revision: args[0]})
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "policy %s in force (pinned)\n", r.GetRevision())
			return nil
		},
	}
}

func (e *env) policyUnpinCommand() *cobra.Command {
	return &cobra.Command{
		Use: "unpin", Short: "End a rollback: the newest good revision is in force again", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := call(cmd.Context(), e, adminv1.AdminServiceClient.GetPolicyStatus, &adminv1.GetPolicyStatusRequest{})
			if err != nil {
				return err
			}
			if st.GetPinnedRevision() == "" {
				fmt.Fprintf(e.stdout, "nothing pinned: policy %s in force, following the repository\n", st.GetActiveRevision())
				return nil
			}
			r, err := call(cmd.Context(), e, adminv1.AdminServiceClient.UnpinPolicy, &adminv1.UnpinPolicyRequest{})
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "policy %s in force\n", r.GetRevision())
			return nil
		},
	}
}

func (e *env) policyCheckCommand() *cobra.Command {
	var decision string
	var verbose, coverage bool
	cmd := &cobra.Command{
		Use:   "check DIR [-v] [--coverage]",
		Short: "Validate a policy directory as the server would (compile, run *_test.rego, sample requests); no server needed",
		Args:  exactArgs(1, "DIR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := os.Stat(args[0]); err != nil {
				return fmt.Errorf("policy dir: %w", err)
			}
			p, err := gitsync.CheckWith(cmd.Context(), args[0], authz.Config{Decision: decision}, gitsync.Options{Coverage: coverage})
			if p != nil && (verbose || coverage) {
				e.printTestReport(p, verbose, coverage)
			}
			if err != nil {
				return err
			}
			for _, w := range p.Warnings() {
				fmt.Fprintf(e.stderr, "warning: %s\n", w)
			}
			fmt.Fprintf(e.stdout, "ok: %d modules, %d test files, %d grants\n", len(p.Modules), len(p.Tests), len(p.Grants))
			return nil
		},
	}
	cmd.Flags().StringVar(&decision, "authz-decision", "", "the server's authz.decision, if set")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print each Rego test with PASS or FAIL and its duration, as opa test -v")
	cmd.Flags().BoolVar(&coverage, "coverage", false, "print how much of each module the tests evaluate, by line")
	return cmd
}

// printTestReport writes the Rego tests' outcomes (verbose) and the coverage, as `opa test -v` and
// `opa test --coverage` summarise them.
func (e *env) printTestReport(p *gitsync.Policy, verbose, coverage bool) {
	w := e.stdout
	if verbose {
		pass := 0
		for _, r := range p.Results {
			line := fmt.Sprintf("%s: %s (%s)", r.Name, r.Outcome, r.Duration.Round(time.Microsecond))
			if r.Error != "" {
				line += ": " + r.Error
			}
			fmt.Fprintf(w, "%s  %s\n", r.Location, line)
			if r.Outcome == "PASS" {
				pass++
			}
		}
		fmt.Fprintln(w, strings.Repeat("-", 80))
		fmt.Fprintf(w, "PASS: %d/%d\n", pass, len(p.Results))
	}
	if coverage && p.Coverage != nil {
		tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
		fmt.Fprintln(tw, "FILE\tCOVERAGE\tLINES COVERED\tNOT COVERED")
		for _, f := range p.Coverage.Files {
			fmt.Fprintf(tw, "%s\t%.1f%%\t%d\t%d\n", f.Name, f.Percent, f.Covered, f.NotCovered)
		}
		tw.Flush()
		fmt.Fprintf(w, "coverage: %.1f%%\n", p.Coverage.Percent)
	}
}
