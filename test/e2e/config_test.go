//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestServerRejectsInvalidConfig starts `kith server` with bad configuration and expects it to exit
// non-zero with an error that names the offending field.
func TestServerRejectsInvalidConfig(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	unknownField := filepath.Join(dir, "unknown.yaml")
	if err := os.WriteFile(unknownField, []byte("trust_domain: example.org\nca:\n  root_tll: 30d\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	badTTL := filepath.Join(dir, "ttl.yaml")
	if err := os.WriteFile(badTTL, []byte("svid:\n  x509_ttl: soon\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Free ports, so that a server that wrongly starts does not fail for another reason.
	ports := []string{"KITH_LISTEN_GRPC=" + freeAddr(t), "KITH_LISTEN_HTTP=" + freeAddr(t)}

	tests := []struct {
		name string
		env  []string
		args []string
		want []string // all must appear in stderr
		// at least one must appear in stderr: the field, or for YAML its line (as yaml.v3 reports
		// unknown fields)
		where []string
	}{
		{
			name: "an invalid trust domain in KITH_TRUST_DOMAIN names trust_domain",
			env:  []string{"KITH_TRUST_DOMAIN=Bad_Domain"},
			want: []string{"trust_domain", "Bad_Domain"},
		},
		{
			name: "an unknown field in the YAML file names the field",
			args: []string{"-c", unknownField},
			want: []string{"root_tll"},
		},
		{
			name:  "a duration in the YAML file that does not parse names the field",
			args:  []string{"-c", badTTL},
			want:  []string{"soon"},
			where: []string{"x509_ttl", "line 2"},
		},
		{
			name: "a bad duration in the environment names the field and the variable",
			env:  []string{"KITH_CA_ROOT_TTL=forever"},
			want: []string{"ca.root_ttl", "KITH_CA_ROOT_TTL"},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"server", "--data-dir", filepath.Join(dir, "data", string(rune('a'+i)))}, tt.args...)
			p := start(t, "server", append(append([]string{}, ports...), tt.env...), args...)
			code := p.wait(15 * time.Second)
			stderr := p.stderr.String()
			if code == 0 {
				t.Errorf("kith server exited 0, want non-zero")
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not mention %q:\n%s", w, stderr)
				}
			}
			if len(tt.where) > 0 && !slices.ContainsFunc(tt.where, func(w string) bool { return strings.Contains(stderr, w) }) {
				t.Errorf("stderr says neither which field nor which line (want one of %q):\n%s", tt.where, stderr)
			}
			t.Logf("exit %d: %s", code, strings.TrimSpace(stderr))
		})
	}
}
