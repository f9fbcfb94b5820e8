package sds

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kithid/kith/svid/cache"
)

func TestRequestedNames(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []string
		want    []string
		wantErr bool
	}{
		{name: "no names stay none", in: nil, want: nil},
		{name: "distinct names keep their order", in: []string{"ROOTCA", "default", "ALL"}, want: []string{"ROOTCA", "default", "ALL"}},
		{name: "repeats are dropped, first seen first", in: []string{"default", "ROOTCA", "default", "ROOTCA", "ALL", "default"}, want: []string{"default", "ROOTCA", "ALL"}},
		{name: "the cap of distinct names is accepted", in: distinctNames(maxNames), want: distinctNames(maxNames)},
		{name: "any number of repeats within the cap is accepted", in: repeat(distinctNames(maxNames), 50), want: distinctNames(maxNames)},
		{name: "one distinct name over the cap is refused", in: distinctNames(maxNames + 1), wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := requestedNames(tc.in)
			if tc.wantErr {
				checkTooMany(t, err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestRepeatedNamesAreServedOnce: a request listing a name many times gets it once, on every API.
func TestRepeatedNamesAreServedOnce(t *testing.T) {
	e := newEnv(t)
	req := repeat([]string{"ROOTCA", "default"}, 10000)
	want := []string{"ROOTCA", "default"}

	t.Run("StreamSecrets", func(t *testing.T) {
		c := openSotW(t, e.connA, nil)
		c.request(req...)
		if diff := cmp.Diff(want, secretNames(t, c.recv())); diff != "" {
			t.Fatalf("(-want +got):\n%s", diff)
		}
		t.Run("and the same names repeated again are an ACK", func(t *testing.T) {
			c.ack(repeat(want, 3)...)
			c.quiet(quiet)
		})
	})
	t.Run("StreamAggregatedResources", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(e.connA).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: SecretType, ResourceNames: req}); err != nil {
			t.Fatal(err)
		}
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, secretNames(t, r)); diff != "" {
			t.Fatalf("(-want +got):\n%s", diff)
		}
	})
	t.Run("FetchSecrets", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := secretv3.NewSecretDiscoveryServiceClient(e.connA).FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{TypeUrl: SecretType, ResourceNames: req})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, secretNames(t, r)); diff != "" {
			t.Fatalf("(-want +got):\n%s", diff)
		}
	})
	t.Run("DeltaSecrets", func(t *testing.T) {
		d := openDelta(t, e.connA)
		d.send(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: req})
		r := d.recv()
		if len(r.Resources) != len(want) {
			t.Fatalf("got %d resources, want %d", len(r.Resources), len(want))
		}
		if diff := cmp.Diff([]string{"ROOTCA", "default"}, deltaNames(t, r)); diff != "" {
			t.Fatalf("(-want +got):\n%s", diff)
		}
	})
}

func TestTooManyNamesAreRefused(t *testing.T) {
	e := newEnv(t)
	over := distinctNames(maxNames + 1)
	t.Run("on the first StreamSecrets request", func(t *testing.T) {
		c := openSotW(t, e.connA, nil)
		c.request(over...)
		checkTooMany(t, c.fail())
	})
	t.Run("on a changed StreamSecrets name list", func(t *testing.T) {
		c := openSotW(t, e.connA, nil)
		c.request("default")
		c.recv()
		c.request(append([]string{"default"}, over...)...)
		checkTooMany(t, c.fail())
	})
	t.Run("on FetchSecrets", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := secretv3.NewSecretDiscoveryServiceClient(e.connA).FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{TypeUrl: SecretType, ResourceNames: over})
		checkTooMany(t, err)
	})
	t.Run("on a DeltaSecrets subscription", func(t *testing.T) {
		d := openDelta(t, e.connA)
		d.send(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: over})
		checkTooMany(t, d.fail())
	})
	t.Run("on too many DeltaSecrets initial versions", func(t *testing.T) {
		d := openDelta(t, e.connA)
		have := map[string]string{}
		for _, n := range over {
			have[n] = "1"
		}
		d.send(&discoveryv3.DeltaDiscoveryRequest{InitialResourceVersions: have})
		checkTooMany(t, d.fail())
	})
	t.Run("but the cap itself is not refused", func(t *testing.T) {
		c := openSotW(t, e.connA, nil)
		c.request(distinctNames(maxNames)...)
		// The names are unknown, so the answer is NotFound: the request got past the cap.
		if err := c.fail(); status.Code(err) != codes.NotFound {
			t.Fatalf("error %v, want NotFound", err)
		}
	})
}

// TestDeltaSubscriptionsAreCapped: names subscribed over several requests count together.
func TestDeltaSubscriptionsAreCapped(t *testing.T) {
	e := newEnv(t)
	ids := e.manyIdentities(maxNames + 1)
	d := openDelta(t, e.connA)
	d.send(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: ids[:100]})
	r := d.recv()
	if len(r.Resources) != 100 {
		t.Fatalf("first subscription: %d resources, want 100", len(r.Resources))
	}
	t.Run("up to the cap, more names are subscribed", func(t *testing.T) {
		d.send(&discoveryv3.DeltaDiscoveryRequest{ResponseNonce: r.Nonce, ResourceNamesSubscribe: ids[100:maxNames]})
		r = d.recv()
		if got, want := len(r.Resources), maxNames-100; got != want {
			t.Fatalf("%d resources, want %d", got, want)
		}
	})
	t.Run("unsubscribing makes room", func(t *testing.T) {
		d.send(&discoveryv3.DeltaDiscoveryRequest{ResponseNonce: r.Nonce, ResourceNamesUnsubscribe: ids[:1], ResourceNamesSubscribe: ids[maxNames:]})
		r = d.recv()
		if diff := cmp.Diff(ids[:1], r.RemovedResources); diff != "" {
			t.Fatalf("removed (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(ids[maxNames:], deltaNames(t, r)); diff != "" {
			t.Fatalf("added (-want +got):\n%s", diff)
		}
	})
	t.Run("one more past the cap ends the stream with InvalidArgument", func(t *testing.T) {
		d.send(&discoveryv3.DeltaDiscoveryRequest{ResponseNonce: r.Nonce, ResourceNamesSubscribe: ids[:1]})
		checkTooMany(t, d.fail())
	})
}

// checkTooMany fails unless err is InvalidArgument with a message naming the cap.
func checkTooMany(t *testing.T, err error) {
	t.Helper()
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("error %v, want InvalidArgument", err)
	}
	if msg := status.Convert(err).Message(); !strings.Contains(msg, fmt.Sprintf("at most %d", maxNames)) {
		t.Fatalf("message %q does not name the cap of %d", msg, maxNames)
	}
}

// manyIdentities gives workload A n identities (A's own first) and returns their SPIFFE IDs in order.
func (e *env) manyIdentities(n int) []string {
	e.t.Helper()
	ids := []string{idA.String()}
	entries := []cache.Entry{{ID: "a", SPIFFEID: idA, Selectors: selsA, Revision: 1}, {ID: "b", SPIFFEID: idB, Selectors: selsB, Revision: 1}}
	for i := 1; i < n; i++ {
		id := spiffeid.RequireFromString(fmt.Sprintf("spiffe://example.org/ns/a/sa/app-%03d", i))
		ids = append(ids, id.String())
		entries = append(entries, cache.Entry{ID: fmt.Sprintf("a%03d", i), SPIFFEID: id, Selectors: selsA, Revision: 2})
	}
	e.cache.ReplaceEntries(entries, 2)
	svids := map[string]*cache.SVID{}
	for _, ent := range entries[2:] {
		svids[ent.ID] = e.sign(ent.SPIFFEID, 10*time.Second)
	}
	e.cache.SetSVIDs(svids)
	return ids
}

// secretNames returns a response's secret names in the order sent.
func secretNames(t *testing.T, r *discoveryv3.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, a := range r.Resources {
		for n := range secrets(t, []*anypb.Any{a}) {
			out = append(out, n)
		}
	}
	return out
}

func distinctNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("name-%d", i)
	}
	return out
}

func repeat(names []string, times int) []string {
	var out []string
	for range times {
		out = append(out, names...)
	}
	return out
}

// fail waits for the stream to end with an error.
func (c *deltaClient) fail() error {
	c.t.Helper()
	return streamError(c.t, c.resps, c.errs, func(r *discoveryv3.DeltaDiscoveryResponse) int { return len(r.Resources) })
}
