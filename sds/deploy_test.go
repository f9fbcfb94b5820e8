package sds

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"
)

// loadBootstrap reads an Envoy bootstrap YAML strictly: unknown fields and unknown types fail.
func loadBootstrap(t *testing.T, path string) *bootstrapv3.Bootstrap {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatalf("convert %s to json: %v", path, err)
	}
	var b bootstrapv3.Bootstrap
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, &b); err != nil {
		t.Fatalf("load %s as an envoy bootstrap: %v", path, err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("validate %s: %v", path, err)
	}
	return &b
}

func TestDeployEnvoyBootstraps(t *testing.T) {
	files, err := filepath.Glob("../deploy/envoy/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	examples, err := filepath.Glob("../deploy/kubernetes/examples/*/envoy-*.yaml")
	files = append(files, examples...)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 4 {
		t.Fatalf("found %v, want the sidecar examples", files)
	}
	for _, f := range files {
		t.Run(filepath.Base(f)+" is a valid bootstrap wired to the agent", func(t *testing.T) {
			b := loadBootstrap(t, f)
			sockets := map[string]string{}
			for _, c := range b.GetStaticResources().GetClusters() {
				for _, ep := range c.GetLoadAssignment().GetEndpoints() {
					for _, lb := range ep.GetLbEndpoints() {
						if p := lb.GetEndpoint().GetAddress().GetPipe(); p != nil {
							sockets[c.Name] = p.Path
						}
					}
				}
			}
			if diff := cmp.Diff(map[string]string{"kith_agent": "/run/kith/agent.sock", "kith_authz": "/run/kith/authz.sock"}, sockets); diff != "" {
				t.Fatalf("agent sockets (-want +got):\n%s", diff)
			}

			in := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0]
			var tlsCtx tlsv3.DownstreamTlsContext
			if err := in.GetTransportSocket().GetTypedConfig().UnmarshalTo(&tlsCtx); err != nil {
				t.Fatal(err)
			}
			common := tlsCtx.GetCommonTlsContext()
			var sdsNames []string
			for _, c := range common.GetTlsCertificateSdsSecretConfigs() {
				sdsNames = append(sdsNames, c.Name)
			}
			vc := common.GetValidationContextSdsSecretConfig()
			if vc == nil {
				vc = common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig()
			}
			sdsNames = append(sdsNames, vc.GetName())
			if diff := cmp.Diff([]string{"default", "ROOTCA"}, sdsNames); diff != "" {
				t.Fatalf("sds secret names (-want +got):\n%s", diff)
			}
			if !sdsFromAgent(vc.GetSdsConfig()) {
				t.Fatalf("ROOTCA does not come from the agent: %v", vc.GetSdsConfig())
			}

			var hcm hcmv3.HttpConnectionManager
			if err := in.GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(hcm.GetHttpFilters(), func(f *hcmv3.HttpFilter) bool { return f.Name == "envoy.filters.http.ext_authz" })
			if i < 0 {
				t.Fatal("no ext_authz filter")
			}
			var authz extauthzv3.ExtAuthz
			if err := hcm.GetHttpFilters()[i].GetTypedConfig().UnmarshalTo(&authz); err != nil {
				t.Fatal(err)
			}
			got := []any{authz.GetTransportApiVersion(), authz.GetIncludePeerCertificate(), authz.GetGrpcService().GetEnvoyGrpc().GetClusterName()}
			if diff := cmp.Diff([]any{corev3.ApiVersion_V3, true, "kith_authz"}, got); diff != "" {
				t.Fatalf("ext_authz (-want +got):\n%s", diff)
			}
		})
	}
}

func sdsFromAgent(c *corev3.ConfigSource) bool {
	if c.GetAds() != nil {
		return true
	}
	for _, g := range c.GetApiConfigSource().GetGrpcServices() {
		if strings.HasPrefix(g.GetEnvoyGrpc().GetClusterName(), "kith_agent") {
			return true
		}
	}
	return false
}

func TestLoadBootstrapRejectsUnknownFields(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(path, []byte("node: {id: x, clustr: typo}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var b bootstrapv3.Bootstrap
	raw, _ := os.ReadFile(path)
	var doc any
	_ = yaml.Unmarshal(raw, &doc)
	js, _ := json.Marshal(doc)
	if err := protojson.Unmarshal(js, &b); err == nil {
		t.Fatal("a misspelt field loaded without error")
	}
}
