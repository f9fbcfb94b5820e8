package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

func init() {
	extraCommands = append(extraCommands, (*env).activityCommand)
}

// activityOut is what kith activity prints (-o json).
type activityOut struct {
	SPIFFEID        string           `json:"spiffe_id"`
	SVIDs           []activitySVID   `json:"svids"`
	Callers         []activityCaller `json:"callers"`
	AgentsReporting int              `json:"agents_reporting"`
	OldestReport    *time.Time       `json:"oldest_report,omitempty"`
}

type activitySVID struct {
	Agent     string    `json:"agent"`
	Entry     string    `json:"entry"`
	Serial    string    `json:"serial"`
	ExpiresAt time.Time `json:"expires_at"`
}

type activityCaller struct {
	Caller  string `json:"caller"`
	Allowed uint64 `json:"allowed"`
	Denied  uint64 `json:"denied"`
}

func (e *env) activityCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "activity ID",
		Short: "The SVIDs of an identity that agents hold, and their decisions about it per caller",
		Long: `kith activity shows, for one identity (a SPIFFE ID, or a short name in the home trust domain), the
X.509-SVIDs of it that agents hold now (agent, entry, serial, expiry) and the ext_authz decisions those
agents made about it since each started, per caller — as the agents connected to this server last
reported them (every few seconds when something changed; activity_report_every on the agent).`,
		Args: exactArgs(1, "ID"),
		RunE: e.withAdmin(func(cmd *cobra.Command, args []string, c adminv1.AdminServiceClient) error {
			id, err := resolveID(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			resp, err := c.GetIdentityActivity(cmd.Context(), &adminv1.GetIdentityActivityRequest{SpiffeId: id})
			if err != nil {
				return err
			}
			out := activityOut{SPIFFEID: id, SVIDs: []activitySVID{}, Callers: []activityCaller{}, AgentsReporting: int(resp.GetAgentsReporting())}
			if resp.GetOldestReport() != nil {
				t := resp.GetOldestReport().AsTime()
				out.OldestReport = &t
			}
			for _, s := range resp.GetSvids() {
				out.SVIDs = append(out.SVIDs, activitySVID{Agent: s.GetAgentId(), Entry: s.GetEntryId(), Serial: s.GetSerialNumber(), ExpiresAt: s.GetExpiresAt().AsTime()})
			}
			for _, cd := range resp.GetCallers() {
				out.Callers = append(out.Callers, activityCaller{Caller: cd.GetCaller(), Allowed: cd.GetAllowed(), Denied: cd.GetDenied()})
			}
			return e.print(out, func() { e.activityText(out) })
		}),
	}
}

func (e *env) activityText(a activityOut) {
	fmt.Fprintf(e.stdout, "%s\n", a.SPIFFEID)
	if a.AgentsReporting == 0 {
		fmt.Fprintln(e.stdout, "No agent connected to this server has reported an SVID of it or a decision about it.")
		return
	}
	now := time.Now()
	fmt.Fprintf(e.stdout, "\nSVIDs held (%d):\n", len(a.SVIDs))
	for _, s := range a.SVIDs {
		fmt.Fprintf(e.stdout, "  %s  entry %s  serial %s  expires %s (in %s)\n", s.Agent, s.Entry, s.Serial, s.ExpiresAt.Format(time.RFC3339), s.ExpiresAt.Sub(now).Round(time.Second))
	}
	fmt.Fprintf(e.stdout, "\nDecisions about it, per caller (%d):\n", len(a.Callers))
	for _, c := range a.Callers {
		caller := c.Caller
		if caller == "" {
			caller = "(no caller identity)"
		}
		fmt.Fprintf(e.stdout, "  %s  allowed %d  denied %d\n", caller, c.Allowed, c.Denied)
	}
	if a.OldestReport != nil {
		fmt.Fprintf(e.stdout, "\nFrom %d agent(s); the oldest report is %s old.\n", a.AgentsReporting, now.Sub(*a.OldestReport).Round(time.Second))
	}
}
