package policybundle

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	"github.com/open-policy-agent/opa/v1/bundle"
)

// Roots are the data and policy roots a Kith policy bundle owns.
var Roots = []string{"kith/ext", "envoy"}

// Build packs Rego modules (file name → source) into an OPA bundle (.tar.gz) whose manifest
// carries the revision.
func Build(revision string, modules map[string]string) ([]byte, error) {
	b := bundle.Bundle{Manifest: bundle.Manifest{Revision: revision}, Data: map[string]any{}}
	names := make([]string, 0, len(modules))
	for name := range modules {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		b.Modules = append(b.Modules, bundle.ModuleFile{URL: "/" + name, Path: "/" + name, Raw: []byte(modules[name])})
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(b); err != nil {
		return nil, fmt.Errorf("write policy bundle %s: %w", revision, err)
	}
	return buf.Bytes(), nil
}

// Read unpacks a bundle made by Build into its revision and modules.
func Read(data []byte) (string, map[string]string, error) {
	b, err := bundle.NewReader(bytes.NewReader(data)).WithSkipBundleVerification(true).Read()
	if err != nil {
		return "", nil, fmt.Errorf("read policy bundle: %w", err)
	}
	return b.Manifest.Revision, sources(b), nil
}

// sources returns a read bundle's modules by file name (without the leading slash), as written.
func sources(b bundle.Bundle) map[string]string {
	modules := make(map[string]string, len(b.Modules))
	for _, m := range b.Modules {
		modules[strings.TrimPrefix(m.Path, "/")] = string(m.Raw)
	}
	return modules
}
