package config

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestAgentWorkloadAttestors(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    []string
		wantErr string
	}{
		{name: "the default is unix", want: []string{"unix"}},
		{name: "unix can be named", env: map[string]string{"KITH_AGENT_WORKLOAD_ATTESTORS": "unix"}, want: []string{"unix"}},
		{name: "an unknown attestor is refused with the known ones", env: map[string]string{"KITH_AGENT_WORKLOAD_ATTESTORS": "unix,k8s"},
			wantErr: `workload_attestors: "k8s" is not a workload attestor: use one of unix`},
		{name: "an attestor listed twice is refused", env: map[string]string{"KITH_AGENT_WORKLOAD_ATTESTORS": "unix,unix"},
			wantErr: `workload_attestors: "unix" is listed twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"KITH_AGENT_DATA_DIR": t.TempDir()}
			for k, v := range tt.env {
				env[k] = v
			}
			cfg, err := LoadAgent("", func(k string) (string, bool) { v, ok := env[k]; return v, ok })
			if err != nil {
				t.Fatal(err)
			}
			err = cfg.Finish()
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Finish() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Finish() error: %v", err)
			}
			if diff := cmp.Diff(tt.want, cfg.WorkloadAttestors); diff != "" {
				t.Errorf("workload_attestors (-want +got):\n%s", diff)
			}
		})
	}
}
