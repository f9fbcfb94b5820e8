package cli

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

func init() {
	extraCommands = append(extraCommands, (*env).statusCommand)
}

// statusOutput is `kith status -o json`: the two responses with their proto field names.
type statusOutput struct {
	Server json.RawMessage `json:"server"`
	CA     json.RawMessage `json:"ca"`
}

func (e *env) statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "The server: trust domain, version, store revision, the CA's intermediate, next rotation and upstream",
		Args:  noArgs,
		RunE: e.withAdmin(func(cmd *cobra.Command, _ []string, c adminv1.AdminServiceClient) error {
			info, err := c.GetServerInfo(cmd.Context(), &adminv1.GetServerInfoRequest{})
			if err != nil {
				return err
			}
			st, err := c.GetCAStatus(cmd.Context(), &adminv1.GetCAStatusRequest{})
			if err != nil {
				return err
			}
			if e.output == "json" {
				var out statusOutput
				opts := protojson.MarshalOptions{UseProtoNames: true}
				if out.Server, err = opts.Marshal(info); err != nil {
					return err
				}
				if out.CA, err = opts.Marshal(st); err != nil {
					return err
				}
				return e.printJSON(out)
			}
			fmt.Fprintf(e.stdout, "Trust domain:     %s\nVersion:          %s\nStore revision:   %d\n", info.GetTrustDomain(), info.GetVersion(), info.GetRevision())
			e.printCAStatus(st, time.Now())
			return nil
		}),
	}
}

// printCAStatus writes the CA status lines of `kith status` and `kith ca show`.
func (e *env) printCAStatus(st *adminv1.GetCAStatusResponse, now time.Time) {
	up := st.GetUpstream()
	if up == "" {
		up = "none (self-signed root)"
	}
	fmt.Fprintf(e.stdout, "CA upstream:      %s\n", up)
	if n := st.GetServerName(); n != "" {
		fmt.Fprintf(e.stdout, "Server:           %s (signs with an intermediate of its own)\n", n)
	}
	fmt.Fprintf(e.stdout, "Intermediate:     %s, expires %s (%s left)\n", st.GetIntermediateId(), fmtTime(st.GetIntermediateNotAfter()), left(st.GetIntermediateNotAfter(), now))
	fmt.Fprintf(e.stdout, "Next rotation:    prepare %s, activate %s\n", fmtTime(st.GetPrepareAt()), fmtTime(st.GetActivateAt()))
	if st.GetUpstream() == "" {
		return
	}
	errs := fmt.Sprintf("%d", st.GetUpstreamErrors())
	if st.GetLastUpstreamError() != "" {
		errs += fmt.Sprintf(", last at %s: %s", fmtTime(st.GetLastUpstreamErrorAt()), st.GetLastUpstreamError())
	}
	fmt.Fprintf(e.stdout, "Upstream errors:  %s\n", errs)
	if st.GetUpstreamFailures() > 0 {
		fmt.Fprintf(e.stdout, "Upstream failing: %d calls in a row; retrying at %s (keeps signing with the current intermediate)\n",
			st.GetUpstreamFailures(), fmtTime(st.GetUpstreamRetryAt()))
	} else if st.GetLastUpstreamSuccessAt() != nil {
		fmt.Fprintf(e.stdout, "Upstream ok:      last call at %s\n", fmtTime(st.GetLastUpstreamSuccessAt()))
	}
}

func left(t *timestamppb.Timestamp, now time.Time) string {
	if t == nil {
		return "-"
	}
	d := t.AsTime().Sub(now).Round(time.Second)
	if d <= 0 {
		return "none: expired"
	}
	return d.String()
}
