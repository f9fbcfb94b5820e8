package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Selectors of types this Kith has no attestor for are cautioned about, and refused with --strict, for
// entries from a --data file as for one from flags (the file's entries went to the server unchecked), and
// the caution names the file and the entry; a type no Kith knows is refused by the server either way.
func TestSelectorTypesAreCheckedForDataFileEntries(t *testing.T) {
	s := startServer(t, t.TempDir())
	file := filepath.Join(t.TempDir(), "entries.yaml")
	write := func(sel string) {
		t.Helper()
		data := "- {spiffe_id: spiffe://example.org/sel/a, node_selectors: [join_token:name:n1], selectors: [unix:uid:1000]}\n" +
			"- {spiffe_id: spiffe://example.org/sel/b, node_selectors: [join_token:name:n1], selectors: [" + sel + "]}\n"
		if err := os.WriteFile(file, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name     string
		selector string
		strict   bool
		code     int
		stderr   string
		created  bool
	}{
		{"a type no Kith knows is refused", "kubernetes:ns:default", false, 1, `unknown type "kubernetes"`, false},
		{"a type without an attestor here, with --strict, is refused before anything is stored", "join_token:name:n1", true, 1,
			"--data " + file + ": entries[1]: selector join_token:name:n1: no workload attestor of this Kith gives join_token selectors", false},
		{"a type without an attestor here is a warning", "join_token:name:n1", false, 0,
			"warning: --data " + file + ": entries[1]: selector join_token:name:n1", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			write(tt.selector)
			args := []string{"entry", "create", "--data", file}
			if tt.strict {
				args = append(args, "--strict")
			}
			_, errs, code := s.kith(t, args...)
			if code != tt.code || !strings.Contains(errs, tt.stderr) {
				t.Fatalf("kith %s: exit %d, stderr %q; want exit %d with %q", strings.Join(args, " "), code, errs, tt.code, tt.stderr)
			}
			out := s.ok(t, "entry", "list")
			if got := strings.Contains(out, "spiffe://example.org/sel/a"); got != tt.created {
				t.Errorf("entries created: %v, want %v:\n%s", got, tt.created, out)
			}
			if tt.created {
				for _, id := range []string{"spiffe://example.org/sel/a", "spiffe://example.org/sel/b"} {
					s.ok(t, "entry", "show", id) // exists
				}
			}
		})
	}
}
