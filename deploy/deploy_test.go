package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"

	"github.com/kithid/kith/internal/config"
)

// The kith config files the manifests put in ConfigMaps load and validate as the binary would load
// them, with the environment the pods give them.
func TestManifestConfigsLoad(t *testing.T) {
	for _, tt := range []struct {
		dir, cluster, trustDomain string
		server                    string            // what agents dial; zero: kith-server.kith.svc:8081
		podEnv                    map[string]string // beside the DaemonSet's
	}{
		{dir: "kubernetes/base/config", cluster: "kubernetes", trustDomain: "example.org"},
		{dir: "kubernetes/overlays/dev", cluster: "dev", trustDomain: "kith.test"},
		{dir: "kubernetes/overlays/production", cluster: "production", trustDomain: "example.org"},
		{dir: "kubernetes/overlays/ha", cluster: "production", trustDomain: "example.org", server: "kith-server-headless.kith.svc:8081",
			podEnv: map[string]string{"KITH_STORE_URL": "postgres://kith:pw@db.example.org:5432/kith?sslmode=verify-full", // from Secret kith-postgres
				"KITH_SERVER_NAME": "kith-server-0"}}, // the pod's name
	} {
		podEnv := map[string]string{"KITH_AGENT_K8S_KUBELET_URL": "https://10.0.0.7:10250"} // the DaemonSet's
		for k, v := range tt.podEnv {
			podEnv[k] = v
		}
		env := func(k string) (string, bool) { v, ok := podEnv[k]; return v, ok }
		if tt.server == "" {
			tt.server = "kith-server.kith.svc:8081"
		}
		t.Run(tt.dir+" holds a server and an agent config for cluster "+tt.cluster, func(t *testing.T) {
			s, err := config.LoadServer(filepath.Join(tt.dir, "server.yaml"), env)
			if err == nil {
				err = s.Finish()
			}
			if err != nil {
				t.Fatalf("server.yaml: %v", err)
			}
			a, err := config.LoadAgent(filepath.Join(tt.dir, "agent.yaml"), env)
			if err == nil {
				err = a.Finish()
			}
			if err != nil {
				t.Fatalf("agent.yaml: %v", err)
			}
			var clusters []string
			for _, c := range s.NodeAttestors.K8sPSAT.Clusters {
				clusters = append(clusters, c.Name)
				if !slices.Contains(c.ServiceAccounts, "kith:kith-agent") {
					t.Errorf("cluster %s allows %v, not the agent's DaemonSet (kith:kith-agent)", c.Name, c.ServiceAccounts)
				}
			}
			got := []any{s.TrustDomain, clusters, a.NodeAttestor, a.K8sPSAT.Cluster, a.WorkloadAttestors, a.Socket, a.Server, s.Listen.GRPC, s.Listen.HTTP, s.DataDir}
			want := []any{tt.trustDomain, []string{tt.cluster}, "k8s_psat", tt.cluster, []string{"unix", "k8s"}, "/run/kith/agent.sock", tt.server, ":8081", ":8080", "/var/lib/kith"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("trust domain, clusters, agent attestor and cluster, workload attestors, socket, server, ports, data dir (-want +got):\n%s", diff)
			}
			if name, ok := podEnv["KITH_SERVER_NAME"]; ok && s.ServerName != name {
				t.Errorf("server_name %q, want the pod's name %q", s.ServerName, name)
			}
		})
	}
}

// Every manifest under deploy/kubernetes is YAML whose documents name an apiVersion and kind (the k8s-tagged
// TestK8sManifestsApply has the API server validate them).
func TestManifestsParse(t *testing.T) {
	var n int
	err := filepath.WalkDir("kubernetes", func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(p) != ".yaml" {
			return err
		}
		base := filepath.Base(p)
		if base == "server.yaml" && strings.Contains(p, "overlays") || base == "agent.yaml" && strings.Contains(p, "overlays") ||
			strings.Contains(p, "/config/") || strings.HasPrefix(base, "envoy-") {
			return nil // kith and Envoy configs: TestManifestConfigsLoad and sds.TestDeployEnvoyBootstraps
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		for {
			var doc struct {
				APIVersion string `yaml:"apiVersion"`
				Kind       string `yaml:"kind"`
			}
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Errorf("%s: %v", p, err)
				break
			}
			if doc.APIVersion == "" || doc.Kind == "" {
				t.Errorf("%s: a document without apiVersion or kind", p)
			}
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 20 {
		t.Errorf("parsed %d documents, want the base, overlays and example", n)
	}
}

// The Dockerfile builds a static binary in one stage and ships it alone, as a non-root user, at the path
// the agent's probes run.
func TestDockerfile(t *testing.T) {
	f, err := os.Open("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var from []string
	var build, user, entrypoint string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "FROM "):
			from = append(from, strings.Fields(line)[1])
		case strings.HasPrefix(line, "RUN ") && strings.Contains(line, "go build"):
			build = line
		case strings.HasPrefix(line, "USER "):
			user = strings.TrimPrefix(line, "USER ")
		case strings.HasPrefix(line, "ENTRYPOINT "):
			entrypoint = strings.TrimPrefix(line, "ENTRYPOINT ")
		}
	}
	if len(from) != 2 || !strings.HasPrefix(from[0], "golang:") || !(strings.HasPrefix(from[1], "gcr.io/distroless/static") || from[1] == "scratch") {
		t.Errorf("stages %v, want a golang build stage and a distroless static or scratch one", from)
	}
	if !strings.Contains(build, "CGO_ENABLED=0") || !strings.Contains(build, "./cmd/kith") {
		t.Errorf("build %q is not a static build of ./cmd/kith", build)
	}
	if user == "" || strings.HasPrefix(user, "0") || strings.HasPrefix(user, "root") {
		t.Errorf("USER %q, want a non-root user", user)
	}
	probe, err := os.ReadFile("kubernetes/base/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if entrypoint != `["/usr/local/bin/kith"]` || !bytes.Contains(probe, []byte("[/usr/local/bin/kith, agent, healthcheck")) {
		t.Errorf("ENTRYPOINT %s, and the agent's probes must run the same binary", entrypoint)
	}
}

// The chart ships the CRDs of the kustomize base, byte for byte (Helm installs crds/ before the templates).
func TestHelmCRDsAreTheBase(t *testing.T) {
	base, err := filepath.Glob("kubernetes/base/crds/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	chart, err := filepath.Glob("helm/kith/crds/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	names := func(ps []string) (out []string) {
		for _, p := range ps {
			out = append(out, filepath.Base(p))
		}
		return out
	}
	if diff := cmp.Diff(names(base), names(chart)); diff != "" || len(base) == 0 {
		t.Fatalf("CRD files (-base +chart):\n%s", diff)
	}
	for i := range base {
		a, _ := os.ReadFile(base[i])
		b, _ := os.ReadFile(chart[i])
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs from %s: cp deploy/kubernetes/base/crds/*.yaml deploy/helm/kith/crds/", chart[i], base[i])
		}
	}
}
