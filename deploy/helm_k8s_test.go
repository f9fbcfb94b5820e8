//go:build k8s

package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"gopkg.in/yaml.v3"

	"github.com/kithid/kith/internal/config"
	"github.com/kithid/kith/internal/kubernetes/kubetest"
)

// helmBin is the helm scripts/components/helm.sh builds ($KITH_HELM, else its cache).
func helmBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("KITH_HELM")
	if bin == "" {
		cache := os.Getenv("KITH_TEST_CACHE")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				t.Fatal(err)
			}
			cache = filepath.Join(home, ".cache", "kith-test")
		}
		bin = filepath.Join(cache, "helm-v4.3.2", "helm")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("helm is not at %s: run scripts/components/helm.sh once (it builds helm from the Go module proxy into that cache), or set KITH_HELM", bin)
	}
	return bin
}

func helmTemplate(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(helmBin(t), append([]string{"template", "kith", "deploy/helm/kith", "--namespace", "kith", "--include-crds"}, args...)...)
	cmd.Dir = ".."
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm template: %v\n%s", err, errb.String())
	}
	return out.Bytes()
}

// objects parses a multi-document rendering into kind/name → object.
func objects(t *testing.T, raw []byte) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	for {
		var o map[string]any
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if o == nil {
			continue
		}
		md, _ := o["metadata"].(map[string]any)
		name, _ := md["name"].(string)
		kind, _ := o["kind"].(string)
		if kind == "ConfigMap" && strings.Count(name, "-") > 1 { // kustomize suffixes a hash of the content
			name = name[:strings.LastIndex(name, "-")]
		}
		out[kind+"/"+name] = o
	}
	return out
}

func dig(o map[string]any, path ...string) any {
	var cur any = o
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[p]
	}
	return cur
}

// The Helm chart with its default values renders what the kustomize base does, object by object: the same
// RBAC rules, pod security, volumes, probes, ports, CRDs, and kith configs that load to the same settings.
func TestK8sHelmChartMatchesKustomize(t *testing.T) {
	kc := kubetest.Start(t)
	admin := kc.KubeConfigFile(t)
	kust := objects(t, []byte(kubectl(t, kc, admin, nil, "kustomize", "deploy/kubernetes/base")))
	chart := objects(t, helmTemplate(t, "--set", "createNamespace=true"))

	var kinds []string
	for k := range kust {
		kinds = append(kinds, k)
		if _, ok := chart[k]; !ok {
			t.Errorf("the chart renders no %s", k)
		}
	}
	for k := range chart {
		if _, ok := kust[k]; !ok {
			t.Errorf("the chart renders %s, the kustomize base does not", k)
		}
	}
	same := []struct {
		obj  string
		path []string
	}{
		{"ClusterRole/kith-server", []string{"rules"}},
		{"ClusterRole/kith-agent", []string{"rules"}},
		{"ClusterRoleBinding/kith-server", []string{"subjects"}},
		{"ClusterRoleBinding/kith-agent", []string{"subjects"}},
		{"Service/kith-server", []string{"spec"}},
		{"PodDisruptionBudget/kith-server", []string{"spec"}},
		{"Namespace/kith", []string{"metadata", "labels", "pod-security.kubernetes.io/enforce"}},
		{"CustomResourceDefinition/kithidentities.kith.io", []string{"spec"}},
		{"CustomResourceDefinition/kithgrants.kith.io", []string{"spec"}},
		{"StatefulSet/kith-server", []string{"spec", "volumeClaimTemplates"}},
		{"StatefulSet/kith-server", []string{"spec", "selector"}},
		{"DaemonSet/kith-agent", []string{"spec", "selector"}},
		{"DaemonSet/kith-agent", []string{"spec", "updateStrategy"}},
		{"StatefulSet/kith-server", []string{"spec", "template", "metadata", "labels"}},
		{"DaemonSet/kith-agent", []string{"spec", "template", "metadata", "labels"}},
	}
	for _, k := range kinds {
		same = append(same, struct {
			obj  string
			path []string
		}{k, []string{"metadata", "namespace"}})
	}
	for _, kind := range []string{"StatefulSet/kith-server", "DaemonSet/kith-agent"} {
		for _, f := range []string{"hostPID", "securityContext", "serviceAccountName", "volumes", "tolerations"} {
			same = append(same, struct {
				obj  string
				path []string
			}{kind, []string{"spec", "template", "spec", f}})
		}
		for _, f := range []string{"args", "env", "ports", "livenessProbe", "readinessProbe", "resources", "securityContext", "volumeMounts"} {
			same = append(same, struct {
				obj  string
				path []string
			}{kind, []string{"spec", "template", "spec", "containers", "0", f}})
		}
	}
	container0 := func(o map[string]any, path []string) any {
		for i, p := range path {
			if p == "0" {
				cs, _ := dig(o, path[:i]...).([]any)
				if len(cs) == 0 {
					return nil
				}
				return dig(cs[0].(map[string]any), path[i+1:]...)
			}
		}
		return dig(o, path...)
	}
	for _, s := range same {
		k, c := kust[s.obj], chart[s.obj]
		if k == nil || c == nil {
			continue
		}
		want, got := container0(k, s.path), container0(c, s.path)
		if s.path[len(s.path)-1] == "volumes" { // kustomize suffixes ConfigMap names with a hash
			want = stripHashes(want)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s %s: (-kustomize +helm):\n%s", s.obj, strings.Join(s.path, "."), diff)
		}
	}

	t.Run("the configs load to the same settings", func(t *testing.T) {
		for _, f := range []string{"server.yaml", "agent.yaml"} {
			name := "ConfigMap/kith-" + strings.TrimSuffix(f, ".yaml")
			var loaded []any
			for _, o := range []map[string]any{kust[name], chart[name]} {
				p := filepath.Join(t.TempDir(), f)
				data, _ := dig(o, "data", f).(string)
				if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
					t.Fatal(err)
				}
				noEnv := func(string) (string, bool) { return "", false }
				if f == "server.yaml" {
					c, err := config.LoadServer(p, noEnv)
					if err == nil {
						err = c.Finish()
					}
					if err != nil {
						t.Fatalf("%s: %v\n%s", name, err, data)
					}
					loaded = append(loaded, c)
				} else {
					c, err := config.LoadAgent(p, noEnv)
					if err == nil {
						err = c.Finish()
					}
					if err != nil {
						t.Fatalf("%s: %v\n%s", name, err, data)
					}
					loaded = append(loaded, c)
				}
			}
			if diff := cmp.Diff(loaded[0], loaded[1], cmpopts.IgnoreUnexported(config.Server{}, config.Agent{})); diff != "" {
				t.Errorf("%s (-kustomize +helm):\n%s", f, diff)
			}
		}
	})

	t.Run("helm template | kubectl apply --server-side", func(t *testing.T) {
		for _, args := range [][]string{
			{"--set", "createNamespace=true"},
			{"--set", "clusterName=prod-eu,trustDomain=acme.example,agent.kubelet.nodesProxy=true,agent.insecureBootstrap=true,server.storage.size=20Gi,image.tag=v0.1.1"},
		} {
			out := kubectl(t, kc, admin, helmTemplate(t, args...), "apply", "--server-side", "--force-conflicts", "-f", "-")
			if !strings.Contains(out, "daemonset.apps/kith-agent serverside-applied") {
				t.Errorf("kubectl apply printed\n%s", out)
			}
			kubectl(t, kc, admin, nil, "delete", "statefulset", "kith-server", "-n", "kith")
		}
	})
}

// stripHashes drops kustomize's content-hash suffix from configMap names in a volume list.
func stripHashes(v any) any {
	vols, _ := v.([]any)
	for _, vol := range vols {
		if cm, ok := dig(vol.(map[string]any), "configMap").(map[string]any); ok {
			if n, _ := cm["name"].(string); strings.Count(n, "-") > 1 {
				cm["name"] = n[:strings.LastIndex(n, "-")]
			}
		}
	}
	return v
}
