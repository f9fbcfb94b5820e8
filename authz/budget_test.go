package authz

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestSetPolicyRefusesAPolicyOverItsBudget(t *testing.T) {
	tests := []struct {
		name    string
		modules map[string]string
		wantErr []string // substrings; none: accepted
	}{
		{name: "the built-in policy alone is accepted"},
		{name: "a cheap extension is accepted", modules: map[string]string{"ext.rego": extPolicy}},
		{
			name: "a rule costing minutes is refused, naming it",
			modules: map[string]string{"cheap.rego": "package kith.ext\n\nallow if input.kith.method == \"GET\"\n",
				"slow.rego": `package kith.ext

import rego.v1

deny contains "never" if {
	some i in numbers.range(1, 100000)
	some j in numbers.range(1, 100000)
	i * j == -1
}
`},
			wantErr: []string{"took longer than the 25ms evaluation budget", "rule data.kith.ext.deny, slow.rego:"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEngine(t, Config{})
			start := time.Now()
			err := e.SetPolicy(context.Background(), "r", tt.modules)
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("SetPolicy took %s, want it cut at the budget", took)
			}
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("SetPolicy accepted the policy, want it refused")
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q, want it to contain %q", err, want)
				}
			}
			if e.Revision() == "r" {
				t.Error("the refused policy is in force")
			}
		})
	}
}

// BenchmarkSampleInputs measures what the budget is compared with: the built-in decision on the sample
// requests.
func BenchmarkSampleInputs(b *testing.B) {
	e := newEngine(b, Config{})
	ins := sampleInputs()
	for b.Loop() {
		for _, in := range ins {
			if _, err := e.Decide(context.Background(), in); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ins))/1e6, "ms/sample")
}
