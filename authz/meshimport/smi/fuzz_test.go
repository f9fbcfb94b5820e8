package smi_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kithid/kith/authz/meshimport"
	"github.com/kithid/kith/authz/meshimport/smi"
)

// FuzzParseSMI reads arbitrary bytes as SMI objects and converts them: it must never panic, and every
// grant it returns must be valid.
func FuzzParseSMI(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"apiVersion":"access.smi-spec.io/v1alpha3","kind":"TrafficTarget","metadata":{"name":"x"},"spec":{"destination":{"kind":"ServiceAccount","name":"a"},"rules":[{"kind":"TCPRoute","name":"r"}],"sources":[{"kind":"ServiceAccount","name":"b"}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := meshimport.Read("fuzz", data)
		if err != nil {
			return
		}
		p, err := smi.Parse(objs)
		if err != nil {
			return
		}
		res, err := smi.Convert(p, meshimport.Options{TrustDomain: td, SkipUnsupported: true})
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
