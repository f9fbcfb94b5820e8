package gitsync

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseCache(t *testing.T) {
	c := parseCache{}
	first, err := c.parse(map[string]string{"a.rego": "package a\n\nx := 1\n", "b.rego": "package b\n\ny := 1\n"})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("an unchanged file is not parsed again", func(t *testing.T) {
		second, err := c.parse(map[string]string{"a.rego": "package a\n\nx := 1\n", "b.rego": "package b\n\ny := 2\n"})
		if err != nil {
			t.Fatal(err)
		}
		if second["a.rego"] != first["a.rego"] {
			t.Error("a.rego was parsed again")
		}
		if second["b.rego"] == first["b.rego"] || second["b.rego"].Rules[0].Head.Value.String() != "2" {
			t.Errorf("b.rego is %v, want the new source parsed", second["b.rego"])
		}
	})
	t.Run("parse errors of every file are returned and the cache is kept", func(t *testing.T) {
		before := c["a.rego"].mod
		_, err := c.parse(map[string]string{"a.rego": "package a\n\nx := \n", "b.rego": "package b\n\ny := 2\n", "c.rego": "package c\n\nz if {\n"})
		if err == nil || !strings.Contains(err.Error(), "a.rego:") || !strings.Contains(err.Error(), "c.rego:") {
			t.Fatalf("error %v, want one naming a.rego and c.rego", err)
		}
		if len(c) != 2 || c["a.rego"].mod != before {
			t.Errorf("cache changed after a failed parse: %v", c)
		}
	})
	t.Run("files gone from the commit leave the cache", func(t *testing.T) {
		if _, err := c.parse(map[string]string{"b.rego": "package b\n\ny := 2\n"}); err != nil {
			t.Fatal(err)
		}
		if _, ok := c["a.rego"]; ok || len(c) != 1 {
			t.Errorf("cache holds %v, want only b.rego", c)
		}
	})
	t.Run("the built-in module name is refused", func(t *testing.T) {
		if _, err := c.parse(map[string]string{"kith/builtin.rego": "package x\n"}); err == nil || !strings.Contains(err.Error(), "reserved") {
			t.Errorf("error %v", err)
		}
	})
}

func TestUnreadDataFiles(t *testing.T) {
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"data.json", false},               // read
		{"policy/data.json", true},         // below the top: not read
		{"a/b/data.yaml", true},            // deeper, any data file name
		{".github/data.json", false},       // hidden directories are not policy
		{"policy/ext.rego", false},         // rego below the top is read
		{"policy/data.json.bak", false},    // not a data file name
		{"policy/.hidden/data.yml", false}, // under a hidden directory
	} {
		if got := isUnreadData(tc.name); got != tc.want {
			t.Errorf("isUnreadData(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// What a data file holds that can never take effect is a warning: an unknown key, at the top or in a
// grant, and a grant that has already expired. The rest loads as before.
func TestDataFileNotes(t *testing.T) {
	for _, tc := range []struct {
		name, file, data string
		want             []string
	}{
		{"clean", "data.yaml", "grants:\n- {caller: spiffe://td/a, target: spiffe://td/b, expires_at: '2999-01-01T00:00:00Z'}\nlabels: {spiffe://td/a: {env: dev}}\n", nil},
		{"a misspelt top-level key", "data.json", `{"grant": [{"caller": "spiffe://td/a", "target": "spiffe://td/b"}]}`,
			[]string{`data.json: unknown key "grant" is ignored (a data file has grants, labels)`}},
		{"a misspelt grant key", "data.yaml", "grants:\n- {caller: spiffe://td/a, target: spiffe://td/b, method: [GET]}\n",
			[]string{`data.yaml: grants[0]: unknown key "method" is ignored (a grant has caller, target, methods, paths, expires_at, reason)`}},
		{"an expired grant", "data.yaml", "grants:\n- {caller: spiffe://td/a, target: spiffe://td/b, expires_at: '2001-01-01T00:00:00Z'}\n",
			[]string{"data.yaml: grants[0] (spiffe://td/a → spiffe://td/b) expired at 2001-01-01T00:00:00Z: it allows nothing"}},
	} {
		p := &Policy{}
		if err := p.readData(tc.file, []byte(tc.data)); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if diff := cmp.Diff(tc.want, p.Warnings()); diff != "" {
			t.Errorf("%s: warnings (-want +got):\n%s", tc.name, diff)
		}
	}
}
