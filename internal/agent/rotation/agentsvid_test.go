package rotation_test

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/kithid/kith/ca/catest"
	"github.com/kithid/kith/internal/agent/agenttest"
	"github.com/kithid/kith/internal/agent/rotation"
)

func TestAgentSVIDRenewsAtHalfLife(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		authority := catest.NewCA(t, td)
		srv := &agenttest.Server{CA: authority, TTL: time.Hour}
		changes := 0
		a := rotation.NewAgentSVID(rotation.AgentSVIDConfig{Bundle: authority.Bundle(), OnChange: func() { changes++ }})
		if _, err := a.GetX509SVID(); err == nil {
			t.Fatal("an empty AgentSVID served an svid")
		}
		id := spiffeid.RequireFromPath(td, "/kith/agent/join_token/n1")
		key, chain := catest.IssueSVID(t, authority, id, time.Hour)
		a.Set(&x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key})

		time.Sleep(10 * time.Minute) // first seen 10 min into its life: renew half-way through the 50 min left
		if got, want := a.RenewAt(), chain[0].NotAfter.Add(-25*time.Minute); !got.Equal(want) {
			t.Errorf("renew at %s, want %s", got, want)
		}
		time.Sleep(5 * time.Minute)
		if got, want := a.RenewAt(), chain[0].NotAfter.Add(-25*time.Minute); !got.Equal(want) {
			t.Errorf("renewal time moved to %s when asked again, want %s", got, want)
		}

		if err := a.Renew(context.Background(), srv); err != nil {
			t.Fatal(err)
		}
		got, err := a.GetX509SVID()
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != id || got.Certificates[0].SerialNumber.Cmp(chain[0].SerialNumber) == 0 || changes != 1 {
			t.Errorf("after renewal: id %s, same serial %v, %d changes; want %s, a new serial, 1 change",
				got.ID, got.Certificates[0].SerialNumber.Cmp(chain[0].SerialNumber) == 0, changes, id)
		}
		if got, want := a.RenewAt(), time.Now().Add(30*time.Minute); !got.Equal(want) {
			t.Errorf("new svid renews at %s, want %s (half of its hour)", got, want)
		}
	})
}

func TestAgentSVIDRefusesAnSVIDThatDoesNotVerify(t *testing.T) {
	authority, other := catest.NewCA(t, td), catest.NewCA(t, td)
	a := rotation.NewAgentSVID(rotation.AgentSVIDConfig{Bundle: authority.Bundle()})
	_, chain := catest.IssueSVID(t, other, spiffeid.RequireFromPath(td, "/kith/agent/join_token/n1"), time.Hour)
	var der [][]byte
	for _, c := range chain {
		der = append(der, c.Raw)
	}
	if err := a.Accept(der, nil, nil); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("accept = %v, want an error saying it does not verify", err)
	}
	if !a.ID().IsZero() {
		t.Errorf("holds %s after a refused svid", a.ID())
	}
}
