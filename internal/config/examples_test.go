package config

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// yamlPaths lists the YAML paths of t's leaf fields ("ca.root_ttl").
func yamlPaths(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[Duration]() {
			out = append(out, yamlPaths(f.Type, prefix+name+".")...)
			continue
		}
		out = append(out, prefix+name)
	}
	return out
}

// The shipped example configs load, are every default (so copying one changes nothing), and name every
// field, set or commented, so that a new field cannot be left out of them.
func TestExampleConfigs(t *testing.T) {
	noEnv := func(string) (string, bool) { return "", false }
	tests := []struct {
		file  string
		load  func() (any, error)
		empty func() (any, error)
		typ   reflect.Type
	}{
		{
			file: "../../deploy/config/server.yaml",
			load: func() (any, error) {
				c, err := LoadServer("../../deploy/config/server.yaml", noEnv)
				if err == nil {
					err = c.Finish()
				}
				return c, err
			},
			empty: func() (any, error) { c := &Server{}; return c, c.Finish() },
			typ:   reflect.TypeFor[Server](),
		},
		{
			file: "../../deploy/config/agent.yaml",
			load: func() (any, error) {
				c, err := LoadAgent("../../deploy/config/agent.yaml", noEnv)
				if err == nil {
					err = c.Finish()
				}
				return c, err
			},
			empty: func() (any, error) { c := &Agent{}; return c, c.Finish() },
			typ:   reflect.TypeFor[Agent](),
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := tt.load()
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			want, err := tt.empty()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("the example differs from the defaults (-defaults +example):\n%s", diff)
			}
			text, err := os.ReadFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			for _, path := range yamlPaths(tt.typ, "") {
				leaf := path[strings.LastIndex(path, ".")+1:]
				if !regexp.MustCompile(`(?m)^\s*(# )?` + regexp.QuoteMeta(leaf) + `:`).Match(text) {
					t.Errorf("%s does not name %s (set it to its default, or comment it with an example)", tt.file, path)
				}
			}
		})
	}
}
