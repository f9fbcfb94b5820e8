package sds

import (
	"context"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	sotw "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestAggregatedDiscoveryService drives the secret type over ADS with go-control-plane's own client,
// as an Envoy configured with `ads: {}` would.
func TestAggregatedDiscoveryService(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := sotw.NewADSClient(ctx, nodeWith("ads-a", nil), SecretType)
	if err := c.InitConnect(e.connA); err != nil {
		t.Fatal(err)
	}
	fetch := func() (*sotw.Response, error) {
		type result struct {
			r   *sotw.Response
			err error
		}
		ch := make(chan result, 1)
		go func() { r, err := c.Fetch(); ch <- result{r, err} }()
		select {
		case res := <-ch:
			return res.r, res.err
		case <-time.After(5 * time.Second):
			t.Fatal("no response within 5s")
		}
		return nil, nil
	}

	r, err := fetch()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"spiffe://example.org", idA.String()}, names(secrets(t, r.Resources))); diff != "" {
		t.Fatalf("empty names: everything the caller may have (-want +got):\n%s", diff)
	}
	if err := c.Ack(); err != nil {
		t.Fatal(err)
	}

	s := e.rotate("a", 10*time.Second)
	r, err = fetch()
	if err != nil {
		t.Fatal(err)
	}
	if !leafOf(t, secrets(t, r.Resources)[idA.String()]).Equal(svidLeaf(t, s)) {
		t.Fatal("rotation push does not hold the new SVID")
	}
	if err := c.Nack("rejected by test"); err != nil {
		t.Fatal(err)
	}

	// Nothing is resent after the NACK: the next Fetch only returns when the stream ends.
	ch := make(chan error, 1)
	go func() { _, err := c.Fetch(); ch <- err }()
	select {
	case err := <-ch:
		t.Fatalf("fetch after NACK returned %v, want no response", err)
	case <-time.After(quiet):
	}
	if diff := cmp.Diff([]string{"ads-a"}, e.nacks.got()); diff != "" {
		t.Fatalf("nacks (-want +got):\n%s", diff)
	}
	cancel()
	<-ch
}

func TestAggregatedDiscoveryServiceRefusesOtherTypes(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(e.connA).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: "type.googleapis.com/envoy.config.listener.v3.Listener"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("error %v, want InvalidArgument", err)
	}
}
