package workloadapi

import (
	"context"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/peer"
	wlattest "github.com/kithid/kith/attestation/workload"
	_ "github.com/kithid/kith/attestation/workload/unix" // registers "unix"
	"github.com/kithid/kith/svid/cache"
)

// labeller is a second workload attestor, known only to this test and registered through the
// attestation/workload contract: every caller gets the selector label:env:test.
type labeller struct{}

var _ wlattest.Attestor = labeller{}

var labelSel = attestation.Selector{Type: "label", Key: "env", Value: "test"}

func (labeller) Attest(context.Context, peer.Credentials) ([]attestation.Selector, error) {
	return []attestation.Selector{labelSel, labelSel}, nil // a duplicate, which the merge drops
}

func init() {
	wlattest.Register("label", func(wlattest.Options) (wlattest.Attestor, error) { return labeller{}, nil })
}

func TestASecondWorkloadAttestorsSelectorsReachAnSVID(t *testing.T) {
	me := attestation.Selector{Type: "unix", Key: "uid", Value: strconv.Itoa(os.Getuid())}
	entry := func(name string, sels ...attestation.Selector) cache.Entry {
		return cache.Entry{ID: "e-" + name, SPIFFEID: spiffeid.RequireFromPath(td, "/"+name), Selectors: sels}
	}
	mine, both, labelled := entry("mine", me), entry("both", me, labelSel), entry("labelled", labelSel)
	e := newEnv(t, true, nil, mine, both, labelled, dbEntry)

	tests := []struct {
		name      string
		attestors []string
		want      []string
	}{
		{name: "unix alone serves only the entries its selectors match", attestors: []string{"unix"},
			want: []string{"spiffe://example.org/mine hint="}},
		{name: "unix and the label attestor together serve the entries needing selectors of both", attestors: []string{"unix", "label"},
			want: []string{"spiffe://example.org/both hint=", "spiffe://example.org/labelled hint=", "spiffe://example.org/mine hint="}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := wlattest.New(tt.attestors, wlattest.Options{})
			if err != nil {
				t.Fatal(err)
			}
			e.socket = e.serve(a)
			x, err := workloadapi.FetchX509Context(testContext(t), e.addr())
			if err != nil {
				t.Fatal(err)
			}
			got := svidIDs(x.SVIDs)
			slices.Sort(got)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("svids (-want +got):\n%s", diff)
			}
		})
	}
}
