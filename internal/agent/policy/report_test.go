package policy_test

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/testing/protocmp"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/ca/catest"
	"github.com/kithid/kith/internal/agent/agenttest"
	"github.com/kithid/kith/internal/agent/policy"
)

func TestReporterSendsTheEnforcedRevisionWhileConnected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &agenttest.Server{CA: catest.NewCA(t, spiffeid.RequireTrustDomainFromString("example.org"))}
		var connected atomic.Bool
		var rev atomic.Value
		rev.Store("")
		r, err := policy.NewReporter(policy.ReporterConfig{
			Revision: func() string { return rev.Load().(string) },
			Client: func() policy.StatusReporter {
				if !connected.Load() {
					return nil
				}
				return srv
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go r.Run(ctx)

		r.Report("dropped: not connected")
		synctest.Wait()
		connected.Store(true)
		r.Report("")
		synctest.Wait()
		rev.Store("abc123")
		r.Report("policy bundle def refused")
		synctest.Wait()
		want := []*agentv1.ReportStatusRequest{
			{PolicyRevision: "builtin"},
			{PolicyRevision: "abc123", PolicyError: "policy bundle def refused"},
		}
		if diff := cmp.Diff(want, srv.Reports(), protocmp.Transform()); diff != "" {
			t.Errorf("reports (-want +got):\n%s", diff)
		}
	})
}
