package istio_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kithid/kith/authz/meshimport"
	"github.com/kithid/kith/authz/meshimport/istio"
)

// FuzzParseIstio reads arbitrary bytes as AuthorizationPolicies and converts them: it must never panic, and every
// grant it returns must be valid.
func FuzzParseIstio(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"apiVersion":"security.istio.io/v1","kind":"AuthorizationPolicy","metadata":{"name":"x","namespace":"foo"},"spec":{"action":"DENY","rules":[{"from":[{"source":{"principals":["cluster.local/ns/a/*"],"notNamespaces":["b"]}}],"to":[{"operation":{"paths":["*.js","/a*"],"ports":["80"]}}]}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := meshimport.Read("fuzz", data)
		if err != nil {
			return
		}
		ps, _, err := istio.Parse(objs)
		if err != nil {
			return
		}
		res, err := istio.Convert(ps, meshimport.Options{TrustDomain: td, Workloads: workloads, SkipUnsupported: true})
		if err != nil {
			return
		}
		for _, g := range res.Grants {
			if err := g.Validate(); err != nil {
				t.Errorf("Convert returned an invalid grant: %v", err)
			}
		}
	})
}
