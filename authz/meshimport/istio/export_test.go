package istio_test

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/authz/meshimport"
	"github.com/kithid/kith/authz/meshimport/istio"
)

var opts = meshimport.Options{TrustDomain: td, Workloads: workloads, SkipUnsupported: true}

func exportYAML(t *testing.T, gs []grant.Grant) string {
	t.Helper()
	x, err := istio.Export(gs, opts)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := meshimport.WriteYAML(&b, x); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func importYAML(t *testing.T, y string) []grant.Grant {
	t.Helper()
	objs, err := meshimport.Read("export.yaml", []byte(y))
	if err != nil {
		t.Fatalf("read the export: %v\n%s", err, y)
	}
	ps, _, err := istio.Parse(objs)
	if err != nil {
		t.Fatalf("parse the export: %v\n%s", err, y)
	}
	res, err := istio.Convert(ps, opts)
	if err != nil {
		t.Fatalf("import the export: %v\n%s", err, y)
	}
	return res.Grants
}

var semantics = cmp.Options{cmpopts.IgnoreFields(grant.Grant{}, "ID", "Reason", "Source"), cmpopts.EquateEmpty(),
	cmpopts.SortSlices(func(a, b grant.Grant) bool { return key(a) < key(b) })}

func key(g grant.Grant) string {
	return strings.Join([]string{g.Caller, g.Target, strings.Join(g.Methods, ","), strings.Join(g.Paths, ","), strings.Join(g.PathRegex, ","),
		strings.Join(g.NotPaths, ","), strings.Join(g.NotCallers, ","), strings.Join(g.NotMethods, ","), fmt8(g.Ports), fmt8b(g.Deny)}, " ")
}

func fmt8(p []uint32) string {
	var s []string
	for _, x := range p {
		s = append(s, string(rune('0'+x%10)))
	}
	return strings.Join(s, "")
}

func fmt8b(b bool) string {
	if b {
		return "deny"
	}
	return "allow"
}

func TestImportExportImportIsAFixedPoint(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.yaml")
	files = append(files, "principals") // the policy of TestPrincipalsNamespacesAndExceptions
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			var objs []meshimport.Object
			var err error
			if f == "principals" {
				objs, err = meshimport.Read("p.yaml", []byte(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: DENY
  rules:
  - from: [{source: {notNamespaces: [foo]}}]
    to: [{operation: {notPaths: ["/healthz"], notMethods: [HEAD], ports: ["8080"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a, namespace: foo}
spec:
  rules:
  - from: [{source: {principals: ["cluster.local/ns/prod/*", "spiffe.other/ns/x/sa/y"], namespaces: [prod, test]}}]
    to: [{operation: {paths: ["*.json", "/exact", "/pre/*", "/info*"]}}]
`))
			} else {
				objs, err = meshimport.ReadPath(f, nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			ps, _, err := istio.Parse(objs)
			if err != nil {
				t.Fatal(err)
			}
			res, err := istio.Convert(ps, opts)
			if err != nil {
				t.Fatal(err)
			}
			first := exportYAML(t, res.Grants)
			again := importYAML(t, first)
			if diff := cmp.Diff(res.Grants, again, semantics); diff != "" {
				t.Errorf("import → export → import changed the grants (-imported +re-imported):\n%s\nexport:\n%s", diff, first)
			}
			if second := exportYAML(t, again); second != first {
				t.Errorf("the second export differs from the first:\n%s\n---- first:\n%s", second, first)
			}
		})
	}
}

func TestExportListsWhatIstioCannotSay(t *testing.T) {
	gs := []grant.Grant{
		{ID: "h", Caller: "spiffe://example.org/ns/a/sa/c", Target: "spiffe://example.org/ns/foo/sa/*", Headers: map[string]string{"x": "y"}, Source: "smi:a/x"},
		{ID: "g", Caller: "spiffe://example.org/ns/a/sa/c", Target: "spiffe://example.org/ns/foo/sa/*", Paths: []string{"/a/*/b"}, Source: "cli"},
		{ID: "t", Caller: "spiffe://example.org/ns/a/sa/c", Target: "spiffe://example.org/ns/nolabels/sa/x", Source: "cli"},
		{ID: "ok", Caller: "spiffe://example.org/ns/a/sa/c", Target: "spiffe://example.org/ns/foo/sa/httpbin", Methods: []string{"GET"}, Paths: []string{"/api/*"}, Source: "cli"},
	}
	out := exportYAML(t, gs)
	for _, want := range []string{
		"# not exported: grant h (smi:a/x): header matches",
		"# not exported: grant g (cli): path \"/a/*/b\": a * inside a segment has no Istio form",
		"# not exported: grant t (cli): target spiffe://example.org/ns/nolabels/sa/x: no registered workload with labels",
		"app: httpbin",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("export = %s\nwant %q in it", out, want)
		}
	}
}
