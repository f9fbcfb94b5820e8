package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPolicyCheck(t *testing.T) {
	write := func(t *testing.T, files map[string]string) string {
		dir := t.TempDir()
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	const policy = "package kith.ext\n\ndeny contains \"no deletes\" if input.kith.method == \"DELETE\"\n"
	const test = "package kith.ext_test\n\nimport data.kith.ext\n\ntest_delete if {\n\t\"no deletes\" in ext.deny with input as {\"kith\": {\"method\": \"GET\"}}\n}\n"
	for _, tc := range []struct {
		name     string
		files    map[string]string
		wantCode int
		want     string
	}{
		{"a good directory passes", map[string]string{"ext.rego": policy, "data.json": `{"grants": []}`}, 0, "ok: 1 modules, 0 test files, 0 grants"},
		{"a failing test fails with its file and line", map[string]string{"ext.rego": policy, "ext_test.rego": test}, 1, "ext_test.rego:5: test data.kith.ext_test.test_delete failed"},
		{"a compile error fails with its file and line", map[string]string{"ext.rego": "package kith.ext\n\ndeny contains x if {\n"}, 1, "ext.rego:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Main(context.Background(), []string{"policy", "check", write(t, tc.files)}, &out, &errOut)
			if code != tc.wantCode || !strings.Contains(out.String()+errOut.String(), tc.want) {
				t.Errorf("exit %d, output %q %q; want exit %d containing %q", code, out.String(), errOut.String(), tc.wantCode, tc.want)
			}
		})
	}
}
