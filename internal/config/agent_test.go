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
		{name: "k8s is merged with unix", env: map[string]string{"KITH_AGENT_WORKLOAD_ATTESTORS": "unix,k8s"}, want: []string{"unix", "k8s"}},
		{name: "an unknown attestor is refused with the known ones", env: map[string]string{"KITH_AGENT_WORKLOAD_ATTESTORS": "unix,docker"},
			wantErr: `workload_attestors: "docker" is not a workload attestor: use one of k8s, unix`},
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

func TestAgentNodeAttestor(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string
	}{
		{name: "join_token is the default"},
		{name: "k8s_psat with its cluster", env: map[string]string{"KITH_AGENT_NODE_ATTESTOR": "k8s_psat", "KITH_AGENT_K8S_PSAT_CLUSTER": "prod"}},
		{name: "k8s_psat needs the cluster", env: map[string]string{"KITH_AGENT_NODE_ATTESTOR": "k8s_psat"},
			wantErr: "k8s_psat.cluster: is required with node_attestor k8s_psat: the cluster's name as the server lists it"},
		{name: "k8s_psat and a join token are exclusive", env: map[string]string{"KITH_AGENT_NODE_ATTESTOR": "k8s_psat", "KITH_AGENT_K8S_PSAT_CLUSTER": "prod", "KITH_AGENT_JOIN_TOKEN": "x"},
			wantErr: "join_token: is set but node_attestor is k8s_psat: remove one"},
		{name: "an unknown method", env: map[string]string{"KITH_AGENT_NODE_ATTESTOR": "aws_iid"},
			wantErr: `node_attestor: "aws_iid" is not one of join_token, k8s_psat`},
		{name: "a negative wait", env: map[string]string{"KITH_AGENT_K8S_MAX_WAIT": "-1s"}, wantErr: "k8s.max_wait: must not be negative"},
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
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr) {
				t.Fatalf("Finish() error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
