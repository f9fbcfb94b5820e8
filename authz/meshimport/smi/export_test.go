package smi_test

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/authz/meshimport"
	"github.com/kithid/kith/authz/meshimport/smi"
)

func exportYAML(t *testing.T, gs []grant.Grant) string {
	t.Helper()
	x, err := smi.Export(gs, meshimport.Options{TrustDomain: td})
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
	res, err := importObjects(t, objs, meshimport.Options{})
	if err != nil {
		t.Fatalf("import the export: %v\n%s", err, y)
	}
	return res.Grants
}

// semantics compares grants by what they allow and where they come from, not by ID or reason (route names
// a TrafficTarget split on export carry in its name).
var semantics = cmp.Options{cmpopts.IgnoreFields(grant.Grant{}, "ID", "Reason", "Source"), cmpopts.EquateEmpty(),
	cmpopts.SortSlices(func(a, b grant.Grant) bool {
		return strings.Join([]string{a.Caller, a.Target, strings.Join(a.Methods, ","), strings.Join(a.PathRegex, ","), meshimport.LabelString(a.Headers)}, " ") <
			strings.Join([]string{b.Caller, b.Target, strings.Join(b.Methods, ","), strings.Join(b.PathRegex, ","), meshimport.LabelString(b.Headers)}, " ")
	})}

func TestImportExportImportIsAFixedPoint(t *testing.T) {
	files, _ := filepath.Glob("testdata/traffic-access-*.yaml")
	cases := map[string][]string{}
	for _, f := range files {
		cases[filepath.Base(f)] = []string{filepath.Base(f), "identitybindings-v1alpha4.yaml"}
	}
	// The examples whose routes are in another example of the same page.
	for _, v := range []string{"v1alpha1", "v1alpha2", "v1alpha3"} {
		cases["traffic-access-"+v+"-2.yaml"] = []string{"traffic-access-" + v + "-1.yaml", "traffic-access-" + v + "-2.yaml"}
	}
	cases["traffic-access-v1alpha4-3.yaml"] = []string{"traffic-access-v1alpha4-1.yaml", "traffic-access-v1alpha4-2.yaml", "traffic-access-v1alpha4-3.yaml", "identitybindings-v1alpha4.yaml"}
	for name, files := range cases {
		t.Run(name, func(t *testing.T) {
			res, err := importObjects(t, readFiles(t, files...), meshimport.Options{SkipUnsupported: true})
			if err != nil {
				t.Fatal(err)
			}
			first := exportYAML(t, res.Grants)
			again := importYAML(t, first)
			if len(res.Grants) == len(again) && !strings.Contains(first, "-r1") { // not split: the IDs are kept
				for i := range again {
					if again[i].ID != res.Grants[i].ID {
						t.Errorf("grant %s came back as %s", res.Grants[i].ID, again[i].ID)
					}
				}
			}
			if diff := cmp.Diff(res.Grants, again, semantics); diff != "" {
				t.Errorf("import → export → import changed the grants (-imported +re-imported):\n%s\nexport:\n%s", diff, first)
			}
			if second := exportYAML(t, again); second != first {
				t.Errorf("the second export differs from the first:\n%s\n---- first:\n%s", second, first)
			}
		})
	}
}

func TestExportListsWhatSMICannotSay(t *testing.T) {
	gs := []grant.Grant{
		{ID: "d", Caller: "*", Target: "spiffe://example.org/ns/a/sa/b", Deny: true, Source: "istio:a/x"},
		{ID: "p", Caller: "spiffe://example.org/ns/a/*", Target: "spiffe://example.org/ns/a/sa/b", Source: "cli"},
		{ID: "u", Caller: "spiffe://example.org/user/scott", Target: "spiffe://example.org/ns/a/sa/b", Source: "cli"},
		{ID: "ok", Caller: "spiffe://example.org/ns/a/sa/c", Target: "spiffe://example.org/ns/a/sa/b", Paths: []string{"/api/*"}, Source: "cli"},
	}
	out := exportYAML(t, gs)
	for _, want := range []string{
		"# not exported: grant d (istio:a/x): a deny rule",
		"# not exported: grant p (cli): caller spiffe://example.org/ns/a/* is not a service account's SPIFFE ID",
		"# not exported: grant u (cli): caller spiffe://example.org/user/scott is not a service account's SPIFFE ID",
		"pathRegex: /api/",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("export = %s\nwant %q in it", out, want)
		}
	}
	if got := importYAML(t, out); len(got) != 1 || got[0].PathRegex[0] != "/api/" {
		t.Errorf("the export imports as %+v", got)
	}
}
