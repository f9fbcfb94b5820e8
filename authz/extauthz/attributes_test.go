package extauthz_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kithid/kith/authz/extauthz"
)

// TestAttributesMatchProtoJSON checks that the hand-built document is what
// OPA-Envoy gives policies: protojson.Marshal then json.Unmarshal.
func TestAttributesMatchProtoJSON(t *testing.T) {
	meta, err := structpb.NewStruct(map[string]any{"tenant": "acme", "n": 3})
	if err != nil {
		t.Fatal(err)
	}
	full := request{caller: frontend.String(), target: payments.String(), method: "POST", path: "/api/orders?x=1",
		headers: map[string]string{"x-dev": "true"}}.proto()
	a := full.Attributes
	a.Destination.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: "10.0.0.8", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8443}}}}
	a.Destination.Labels = map[string]string{"app": "payments"}
	a.Source.Service = "frontend"
	a.Request.Time = timestamppb.New(timestamppb.Now().AsTime().Truncate(1000))
	a.Request.Http.Id = "123"
	a.Request.Http.Size = 42
	a.Request.Http.Query = "x=1"
	a.Request.Http.Body = "{}"
	a.ContextExtensions = map[string]string{"virtual_host": "payments"}
	a.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.filters.http.jwt_authn": meta}}
	a.TlsSession = &authv3.AttributeContext_TLSSession{Sni: "payments.example.org"}

	for name, attrs := range map[string]*authv3.AttributeContext{
		"a full request":  a,
		"an empty one":    {},
		"a bare request":  {Request: &authv3.AttributeContext_Request{}},
		"only principals": {Source: &authv3.AttributeContext_Peer{Principal: "x"}, Destination: &authv3.AttributeContext_Peer{}},
	} {
		t.Run(name, func(t *testing.T) {
			b, err := protojson.Marshal(attrs)
			if err != nil {
				t.Fatal(err)
			}
			var want map[string]any
			if err := json.Unmarshal(b, &want); err != nil {
				t.Fatal(err)
			}
			b, err = json.Marshal(extauthz.Attributes(attrs))
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("attributes (-protojson +hand-built):\n%s", diff)
			}
		})
	}
}

func TestAttributesTimeMatchesProtoJSON(t *testing.T) {
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, nanos := range []int{0, 1, 10, 970910000, 970000000, 900000000, 970910, 970910001, 123456789, 999999999} {
		t.Run(fmt.Sprintf("%d ns", nanos), func(t *testing.T) {
			ts := timestamppb.New(base.Add(time.Duration(nanos)))
			b, err := protojson.Marshal(ts)
			if err != nil {
				t.Fatal(err)
			}
			var want string
			if err := json.Unmarshal(b, &want); err != nil {
				t.Fatal(err)
			}
			attrs := extauthz.Attributes(&authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Time: ts}})
			if got := attrs["request"].(map[string]any)["time"]; got != want {
				t.Errorf("request.time = %q, want %q", got, want)
			}
		})
	}
}

func TestAttributesFoldHeaderMap(t *testing.T) {
	attrs := &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
		HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: "X-Dev", RawValue: []byte("true")},
			{Key: "accept", Value: "a"},
			{Key: "accept", Value: "b"},
		}},
	}}}
	got := extauthz.Attributes(attrs)["request"].(map[string]any)["http"].(map[string]any)["headers"]
	want := map[string]string{"x-dev": "true", "accept": "a,b"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("headers (-want +got):\n%s", diff)
	}
}

func BenchmarkAttributes(b *testing.B) {
	req := request{caller: frontend.String(), target: payments.String(), method: "GET", path: "/api/v1/users?limit=10",
		headers: map[string]string{"user-agent": "curl/8", "accept": "*/*", "x-request-id": "5f0c"}}.proto()
	b.Run("hand-built", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = extauthz.Attributes(req.Attributes)
		}
	})
	b.Run("protojson", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			bs, _ := protojson.Marshal(req.Attributes)
			var m map[string]any
			_ = json.Unmarshal(bs, &m)
		}
	})
}
