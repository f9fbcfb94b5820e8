package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

// How kith grant and kith revoke wait for agents to acknowledge a change: without --wait a short look
// (the agents connected now usually answer in milliseconds), with --wait until all have or the timeout.
const (
	enforceGlance      = time.Second
	enforceWaitDefault = 30 * time.Second
	enforcePoll        = 100 * time.Millisecond
)

// bindWait gives kith grant and kith revoke --wait[=TIMEOUT].
func bindWait(cmd *cobra.Command, wait *time.Duration) {
	durationVar(cmd.Flags(), wait, "wait", 0, fmt.Sprintf("wait until every agent that must enforce the change has acknowledged it, at most this long (--wait alone: %s); exit 1 naming those that have not", enforceWaitDefault))
	cmd.Flags().Lookup("wait").NoOptDefVal = enforceWaitDefault.String()
}

// reportEnforcement says how many of the agents that must enforce a change to the grants of targets (made
// at store revision rev) have acknowledged it: the agents that serve an entry a target covers. With wait
// > 0 it waits that long for all of them and fails naming those that have not; otherwise it looks for a
// moment and reports what it saw.
func (e *env) reportEnforcement(ctx context.Context, c adminv1.AdminServiceClient, rev int64, targets []string, wait time.Duration) error {
	if rev <= 0 || len(targets) == 0 {
		return nil
	}
	budget := enforceGlance
	if wait > 0 {
		budget = wait
	}
	deadline := time.Now().Add(budget)
	var resp *adminv1.GetEnforcementResponse
	for {
		var err error
		resp, err = c.GetEnforcement(ctx, &adminv1.GetEnforcementRequest{Revision: rev, Targets: targets})
		if err != nil {
			return err
		}
		if len(resp.GetPending()) == 0 || !time.Now().Before(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(enforcePoll):
		}
	}
	// With -o json the change itself is the output; the count goes to stderr.
	w := io.Writer(e.stdout)
	if e.output == "json" {
		w = e.stderr
	}
	acked, pending, offline := resp.GetAcknowledged(), resp.GetPending(), resp.GetOffline()
	must := len(acked) + len(pending)
	switch {
	case must == 0:
		fmt.Fprintf(w, "no agent serves the target now: nothing to enforce until one does (it gets the change then)\n")
	case len(pending) == 0:
		fmt.Fprintf(w, "enforced by all %d agents that must enforce it\n", must)
	default:
		msg := fmt.Sprintf("acknowledged by %d of %d agents that must enforce it; not yet: %s", len(acked), must, strings.Join(pending, ", "))
		if len(offline) > 0 {
			msg += fmt.Sprintf(" (%d not connected now: %s)", len(offline), strings.Join(offline, ", "))
		}
		if wait > 0 {
			return fmt.Errorf("after %s: %s (the change is stored: agents apply it when they next sync; see kith policy status)", wait, msg)
		}
		fmt.Fprintln(w, msg+" (use --wait to wait for them)")
	}
	return nil
}
