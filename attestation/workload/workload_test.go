package workload_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/peer"
	"github.com/kithid/kith/attestation/workload"
	"github.com/kithid/kith/attestation/workload/workloadtest"
)

func sel(s string) attestation.Selector {
	v, err := attestation.ParseSelector(s)
	if err != nil {
		panic(err)
	}
	return v
}

var (
	first  = &workloadtest.Attestor{Selectors: []attestation.Selector{sel("unix:uid:1000"), sel("unix:gid:1000")}}
	second = &workloadtest.Attestor{Selectors: []attestation.Selector{sel("k8s:ns:prod"), sel("unix:uid:1000")}}
)

func init() {
	workload.Register("first", func(workload.Options) (workload.Attestor, error) { return first, nil })
	workload.Register("second", func(workload.Options) (workload.Attestor, error) { return second, nil })
	workload.Register("broken", func(workload.Options) (workload.Attestor, error) { return nil, errors.New("no kubelet") })
}

func TestMerge(t *testing.T) {
	boom := errors.New("process gone")
	tests := []struct {
		name    string
		as      []workload.Attestor
		want    []string
		wantErr error
	}{
		{name: "selectors of all attestors are merged, sorted and without duplicates", as: []workload.Attestor{first, second},
			want: []string{"k8s:ns:prod", "unix:gid:1000", "unix:uid:1000"}},
		{name: "an attestor's error ends attestation", as: []workload.Attestor{first, &workloadtest.Attestor{Err: boom}, second}, wantErr: boom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := workload.Merge(tt.as...).Attest(t.Context(), peer.Credentials{PID: 1})
			if !errors.Is(err, tt.wantErr) || (err != nil) != (tt.wantErr != nil) {
				t.Fatalf("Attest() error = %v, want %v", err, tt.wantErr)
			}
			if err != nil && got != nil {
				t.Errorf("Attest() = %v with the error, want none", got)
			}
			if diff := cmp.Diff(tt.want, nilIfEmpty(attestation.Strings(got))); diff != "" {
				t.Errorf("selectors (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("the merge of one attestor is that attestor", func(t *testing.T) {
		if workload.Merge(first) != workload.Attestor(first) {
			t.Error("Merge(a) is not a")
		}
	})
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		names   []string
		want    []string
		wantErr string
	}{
		{name: "the named attestors are run together", names: []string{"second", "first"},
			want: []string{"k8s:ns:prod", "unix:gid:1000", "unix:uid:1000"}},
		{name: "an unknown name is refused with the known ones", names: []string{"first", "tpm"},
			wantErr: `unknown workload attestor "tpm" (known: broken, first, second)`},
		{name: "a name listed twice is refused", names: []string{"first", "first"}, wantErr: `workload attestor "first" is listed twice`},
		{name: "no attestor is refused", wantErr: "workload attestors: none configured (known: broken, first, second)"},
		{name: "an attestor that cannot be built is an error naming it", names: []string{"broken"}, wantErr: "workload attestor broken: no kubelet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := workload.New(tt.names, workload.Options{})
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("New() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := a.Attest(t.Context(), peer.Credentials{PID: 1})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, attestation.Strings(got)); diff != "" {
				t.Errorf("selectors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	if err := workload.Check([]string{"first", "second"}); err != nil {
		t.Errorf("Check(registered) = %v", err)
	}
	var u *workload.UnknownError
	if err := workload.Check([]string{"first", "tpm"}); !errors.As(err, &u) || u.Name != "tpm" {
		t.Errorf("Check(tpm) = %v, want an UnknownError naming tpm", err)
	}
}

func TestRegisterTwicePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("a second Register of one name did not panic")
		}
	}()
	workload.Register("first", func(workload.Options) (workload.Attestor, error) { return first, nil })
}
