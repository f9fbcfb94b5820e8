package sds

import (
	"context"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/google/go-cmp/cmp"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

type deltaClient struct {
	t     *testing.T
	st    grpc.BidiStreamingClient[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]
	resps chan *discoveryv3.DeltaDiscoveryResponse
	errs  chan error
}

func openDelta(t *testing.T, conn *grpc.ClientConn) *deltaClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := secretv3.NewSecretDiscoveryServiceClient(conn).DeltaSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &deltaClient{t: t, st: st, resps: make(chan *discoveryv3.DeltaDiscoveryResponse, 16), errs: make(chan error, 1)}
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				c.errs <- err
				return
			}
			c.resps <- r
		}
	}()
	return c
}

func (c *deltaClient) send(req *discoveryv3.DeltaDiscoveryRequest) {
	c.t.Helper()
	req.TypeUrl = SecretType
	if err := c.st.Send(req); err != nil {
		c.t.Fatal(err)
	}
}

func (c *deltaClient) recv() *discoveryv3.DeltaDiscoveryResponse {
	c.t.Helper()
	select {
	case r := <-c.resps:
		if r.Nonce == "" || r.SystemVersionInfo == "" {
			c.t.Fatalf("nonce %q version %q: want both set", r.Nonce, r.SystemVersionInfo)
		}
		return r
	case err := <-c.errs:
		c.t.Fatalf("stream ended: %v", err)
	case <-time.After(5 * time.Second):
		c.t.Fatal("no response within 5s")
	}
	return nil
}

func (c *deltaClient) quiet(d time.Duration) {
	c.t.Helper()
	select {
	case r := <-c.resps:
		c.t.Fatalf("unexpected response: %d resources, removed %v", len(r.Resources), r.RemovedResources)
	case err := <-c.errs:
		c.t.Fatalf("stream ended: %v", err)
	case <-time.After(d):
	}
}

func deltaNames(t *testing.T, r *discoveryv3.DeltaDiscoveryResponse) []string {
	t.Helper()
	var anys []*anypb.Any
	for _, res := range r.Resources {
		if res.Version == "" {
			t.Fatalf("resource %s has no version", res.Name)
		}
		anys = append(anys, res.Resource)
	}
	return names(secrets(t, anys))
}

func TestDeltaSecrets(t *testing.T) {
	e := newEnv(t)
	d := openDelta(t, e.connA)

	d.send(&discoveryv3.DeltaDiscoveryRequest{Node: nodeWith("delta-a", nil), ResourceNamesSubscribe: []string{"default", "ROOTCA"}})
	r := d.recv()
	if diff := cmp.Diff([]string{"ROOTCA", "default"}, deltaNames(t, r)); diff != "" {
		t.Fatalf("subscribe (-want +got):\n%s", diff)
	}

	t.Run("an ACK is not answered", func(t *testing.T) {
		d.send(&discoveryv3.DeltaDiscoveryRequest{ResponseNonce: r.Nonce})
		d.quiet(quiet)
	})
	t.Run("a rotation sends only the certificate", func(t *testing.T) {
		e.rotate("a", 10*time.Second)
		r = d.recv()
		if diff := cmp.Diff([]string{"default"}, deltaNames(t, r)); diff != "" {
			t.Fatalf("push (-want +got):\n%s", diff)
		}
		d.send(&discoveryv3.DeltaDiscoveryRequest{ResponseNonce: r.Nonce})
	})
	t.Run("subscribing to another name sends just that one", func(t *testing.T) {
		d.send(&discoveryv3.DeltaDiscoveryRequest{ResponseNonce: r.Nonce, ResourceNamesSubscribe: []string{"ALL"}})
		r = d.recv()
		if diff := cmp.Diff([]string{"ALL"}, deltaNames(t, r)); diff != "" {
			t.Fatalf("(-want +got):\n%s", diff)
		}
	})
	t.Run("unsubscribing a name sends its removal", func(t *testing.T) {
		d.send(&discoveryv3.DeltaDiscoveryRequest{ResponseNonce: r.Nonce, ResourceNamesUnsubscribe: []string{"ROOTCA", "ALL"}})
		r = d.recv()
		if len(r.Resources) != 0 {
			t.Fatalf("got %d resources, want none", len(r.Resources))
		}
		if diff := cmp.Diff([]string{"ALL", "ROOTCA"}, r.RemovedResources); diff != "" {
			t.Fatalf("removed (-want +got):\n%s", diff)
		}
	})
	t.Run("a NACK is counted", func(t *testing.T) {
		d.send(&discoveryv3.DeltaDiscoveryRequest{ResponseNonce: r.Nonce, ErrorDetail: &rpcstatus.Status{Message: "nope"}})
		d.quiet(quiet)
		if diff := cmp.Diff([]string{"delta-a"}, e.nacks.got()); diff != "" {
			t.Fatalf("nacks (-want +got):\n%s", diff)
		}
	})
	t.Run("a bundle change is not pushed once the bundle is unsubscribed", func(t *testing.T) {
		e.cache.SetBundle(e.bundleWithExtraRoot())
		d.quiet(quiet)
	})
	t.Run("another workload's name ends the stream with NotFound", func(t *testing.T) {
		d.send(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{idB.String()}})
		select {
		case err := <-d.errs:
			if status.Code(err) != codes.NotFound {
				t.Fatalf("error %v, want NotFound", err)
			}
		case r := <-d.resps:
			t.Fatalf("got a response with %d resources", len(r.Resources))
		case <-time.After(5 * time.Second):
			t.Fatal("no error within 5s")
		}
	})
}

func TestDeltaSecretsWildcard(t *testing.T) {
	e := newEnv(t)
	d := openDelta(t, e.connA)
	d.send(&discoveryv3.DeltaDiscoveryRequest{})
	if diff := cmp.Diff([]string{"spiffe://example.org", idA.String()}, deltaNames(t, d.recv())); diff != "" {
		t.Fatalf("wildcard (-want +got):\n%s", diff)
	}
	t.Run("initial versions the proxy already has are not resent", func(t *testing.T) {
		d2 := openDelta(t, e.connA)
		d2.send(&discoveryv3.DeltaDiscoveryRequest{})
		first := d2.recv()
		have := map[string]string{}
		for _, res := range first.Resources {
			have[res.Name] = res.Version
		}
		d3 := openDelta(t, e.connA)
		d3.send(&discoveryv3.DeltaDiscoveryRequest{InitialResourceVersions: have})
		if r := d3.recv(); len(r.Resources) != 0 || len(r.RemovedResources) != 0 {
			t.Fatalf("got %d resources and removals %v, want nothing new", len(r.Resources), r.RemovedResources)
		}
	})
}
