package config

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestServerJWTIssuer(t *testing.T) {
	for _, tt := range []struct {
		issuer, wantErr string
	}{
		{"", ""},
		{"https://kith.example.org", ""},
		{"http://127.0.0.1:8080", ""},
		{"kith.example.org", "ca.jwt_issuer"},
		{"https://kith.example.org/?x=1", "ca.jwt_issuer"},
		{"ftp://kith.example.org", "ca.jwt_issuer"},
		{"https://kith.example.org/", "ca.jwt_issuer"},
		{"https://kith.example.org/oidc", ""},
	} {
		env := map[string]string{"KITH_CA_JWT_ISSUER": tt.issuer, "KITH_DATA_DIR": t.TempDir()}
		cfg, err := LoadServer("", func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		if err == nil {
			err = cfg.Finish()
		}
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%q: %v", tt.issuer, err)
		case tt.wantErr == "" && cfg.CA.JWTIssuer != tt.issuer:
			t.Errorf("%q: loaded %q", tt.issuer, cfg.CA.JWTIssuer)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%q: error %v, want one naming %s", tt.issuer, err, tt.wantErr)
		}
	}
}

func TestServerAdminAllowedIDs(t *testing.T) {
	for _, tt := range []struct {
		name          string
		env           map[string]string
		uids, gids    []int
		wantErrSubstr string
	}{
		{name: "unset leaves both empty (the server's uid and root)"},
		{name: "uids and gids from the environment", env: map[string]string{"KITH_ADMIN_ALLOWED_UIDS": "0, 1000", "KITH_ADMIN_ALLOWED_GIDS": "50"},
			uids: []int{0, 1000}, gids: []int{50}},
		{name: "a name is refused", env: map[string]string{"KITH_ADMIN_ALLOWED_UIDS": "alice"}, wantErrSubstr: "admin.allowed_uids"},
		{name: "a negative id is refused", env: map[string]string{"KITH_ADMIN_ALLOWED_GIDS": "-1"}, wantErrSubstr: "admin.allowed_gids"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"KITH_DATA_DIR": t.TempDir()}
			maps.Copy(env, tt.env)
			cfg, err := LoadServer("", func(k string) (string, bool) { v, ok := env[k]; return v, ok })
			if err == nil {
				err = cfg.Finish()
			}
			if tt.wantErrSubstr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErrSubstr) {
					t.Fatalf("error %v, want one naming %s", err, tt.wantErrSubstr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(Admin{AllowedUIDs: tt.uids, AllowedGIDs: tt.gids}, cfg.Admin); diff != "" {
				t.Errorf("admin (-want +got):\n%s", diff)
			}
		})
	}
}

func TestServerK8sPSATClusters(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr string
	}{
		{name: "a cluster", yaml: "node_attestors: {k8s_psat: {clusters: [{name: prod, service_accounts: [kith:kith-agent]}]}}"},
		{name: "no allow-list", yaml: "node_attestors: {k8s_psat: {clusters: [{name: prod}]}}",
			wantErr: "node_attestors.k8s_psat.clusters[0].service_accounts: list the service accounts"},
		{name: "a bad service account", yaml: "node_attestors: {k8s_psat: {clusters: [{name: prod, service_accounts: [kith/agent]}]}}",
			wantErr: `node_attestors.k8s_psat.clusters[0].service_accounts: "kith/agent" is not namespace:name`},
		{name: "a name with a slash", yaml: "node_attestors: {k8s_psat: {clusters: [{name: a/b, service_accounts: [kith:a]}]}}",
			wantErr: `node_attestors.k8s_psat.clusters[0].name: "a/b" is not`},
		{name: "controllers in two clusters", yaml: "node_attestors: {k8s_psat: {clusters: [{name: a, service_accounts: [kith:a], controllers: true}, {name: b, service_accounts: [kith:a], controllers: true}]}}",
			wantErr: `node_attestors.k8s_psat.clusters[1].controllers: cluster "a" has them already`},
		{name: "controllers in one cluster", yaml: "node_attestors: {k8s_psat: {clusters: [{name: a, service_accounts: [kith:a], controllers: true}, {name: b, service_accounts: [kith:a]}]}}"},
		{name: "a service-account template", yaml: `node_attestors: {k8s_psat: {clusters: [{name: a, service_accounts: [kith:a], service_account_template: "spiffe://{{.TrustDomain}}/k8s/{{.Namespace}}/{{.ServiceAccount}}"}]}}`},
		{name: "a template that is not one", yaml: `node_attestors: {k8s_psat: {clusters: [{name: a, service_accounts: [kith:a], service_account_template: "spiffe://{{.TrustDomain"}]}}`,
			wantErr: `node_attestors.k8s_psat.clusters[0].service_account_template: "spiffe://{{.TrustDomain" is not a Go template`},
		{name: "a template with an unknown field", yaml: `node_attestors: {k8s_psat: {clusters: [{name: a, service_accounts: [kith:a], service_account_template: "spiffe://{{.TrustDomain}}/{{.PodName}}"}]}}`,
			wantErr: `service_account_template: "spiffe://{{.TrustDomain}}/{{.PodName}}" does not expand`},
		{name: "a template outside the trust domain", yaml: `node_attestors: {k8s_psat: {clusters: [{name: a, service_accounts: [kith:a], service_account_template: "spiffe://other.org/ns/{{.Namespace}}/sa/{{.ServiceAccount}}"}]}}`,
			wantErr: `gives "spiffe://other.org/ns/ns-a/sa/sa-a", outside the trust domain example.org`},
		{name: "a template that is not a SPIFFE ID", yaml: `node_attestors: {k8s_psat: {clusters: [{name: a, service_accounts: [kith:a], service_account_template: "{{.Namespace}}/{{.ServiceAccount}}"}]}}`,
			wantErr: `gives "ns-a/sa-a", not a SPIFFE ID`},
		{name: "a template without the namespace", yaml: `node_attestors: {k8s_psat: {clusters: [{name: a, service_accounts: [kith:a], service_account_template: "spiffe://{{.TrustDomain}}/sa/{{.ServiceAccount}}"}]}}`,
			wantErr: `must use both .Namespace and .ServiceAccount`},
		{name: "a cluster twice", yaml: "node_attestors: {k8s_psat: {clusters: [{name: a, service_accounts: [kith:a]}, {name: a, service_accounts: [kith:a]}]}}",
			wantErr: `node_attestors.k8s_psat.clusters[1].name: cluster "a" is listed twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := finishYAML(t, tt.yaml)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Finish: %v", err)
			case tt.wantErr == "" && cfg.NodeAttestors.K8sPSAT.Clusters[0].Audience != "kith":
				t.Errorf("audience %q, want the default kith", cfg.NodeAttestors.K8sPSAT.Clusters[0].Audience)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Finish = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// server_name matters only to servers sharing a postgres store (the server makes one when it is not set):
// a configured one must fit the intermediate's OU.
func TestServerName(t *testing.T) {
	for _, tt := range []struct {
		name, yaml, want, wantErr string
	}{
		{name: "sqlite needs none", yaml: "trust_domain: example.org", want: ""},
		{name: "sqlite keeps one set (the server warns it is unused)", yaml: "server_name: kith-0", want: "kith-0"},
		{name: "postgres: the server makes one", yaml: "store: {url: 'postgres://db/kith'}\nca: {kek_file: /k}", want: ""},
		{name: "postgres takes the configured one", yaml: "server_name: kith-0\nstore: {url: 'postgres://db/kith'}\nca: {kek_file: /k}", want: "kith-0"},
		{name: "a name with a slash", yaml: "server_name: a/b\nstore: {url: 'postgres://db/kith'}\nca: {kek_file: /k}", wantErr: `server_name: "a/b" is not 1 to 63`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := finishYAML(t, tt.yaml)
			switch {
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("Finish = %v, want an error containing %q", err, tt.wantErr)
				}
			case err != nil:
				t.Fatalf("Finish: %v", err)
			case cfg.ServerName != tt.want:
				t.Errorf("server_name %q, want %q", cfg.ServerName, tt.want)
			}
		})
	}
}

// finishYAML loads a server config from yaml, with no environment, and finishes it.
func finishYAML(t *testing.T, yaml string) (*Server, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "server.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadServer(p, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	return cfg, cfg.Finish()
}
