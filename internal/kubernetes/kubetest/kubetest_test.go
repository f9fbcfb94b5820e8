package kubetest

import (
	"os"
	"regexp"
	"testing"
)

// The versions the tests look for are the ones the build script makes.
func TestVersionsMatchScript(t *testing.T) {
	script, err := os.ReadFile("../../../scripts/components/kube.sh")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"KUBE_VERSION": KubeVersion, "ETCD_VERSION": EtcdVersion} {
		m := regexp.MustCompile(`(?m)^` + name + `=(\S+)$`).FindSubmatch(script)
		if m == nil {
			t.Errorf("kube.sh sets no %s", name)
			continue
		}
		if got := string(m[1]); got != want {
			t.Errorf("kube.sh builds %s %s, kubetest looks for %s: change both", name, got, want)
		}
	}
}

// Without the binaries, Start's error says how to get them.
func TestAssetsMissingSaysWhatToRun(t *testing.T) {
	t.Setenv("KUBEBUILDER_ASSETS", t.TempDir())
	_, err := Assets()
	if err == nil || !regexp.MustCompile(`scripts/components/kube\.sh`).MatchString(err.Error()) {
		t.Fatalf("Assets() with an empty directory = %v, want an error naming scripts/components/kube.sh", err)
	}
}
