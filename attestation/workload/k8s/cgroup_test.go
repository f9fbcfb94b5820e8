package k8s

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const (
	fixturePod       = "2c48913c-b29f-11e7-9350-020968147796"
	fixtureContainer = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"
)

// Each fixture is a /proc/<pid>/cgroup as a runtime and cgroup driver write it.
func TestParseCgroupFixtures(t *testing.T) {
	inPod := Container{PodUID: fixturePod, ContainerID: fixtureContainer}
	tests := map[string]struct {
		want    Container
		wantErr string // "" for none; ErrNotInPod's text for that
	}{
		"v1-docker-cgroupfs":         {want: inPod},
		"v1-containerd-systemd":      {want: inPod},
		"v1-crio-systemd":            {want: inPod},
		"v2-containerd-systemd":      {want: inPod},
		"v2-containerd-cgroupfs":     {want: inPod},
		"v2-crio-systemd-guaranteed": {want: inPod},
		"v2-docker-systemd":          {want: inPod},
		"v2-kind-nested":             {want: inPod},
		"v2-static-pod":              {want: Container{PodUID: "0e4b2f7d9c1a3b5d7f9e1c3a5b7d9f1e", ContainerID: fixtureContainer}},
		"v2-host-process":            {wantErr: ErrNotInPod.Error()},
		"v1-docker-not-kubernetes":   {wantErr: ErrNotInPod.Error()},
		"v2-crio-conmon":             {wantErr: ErrNotInPod.Error()},
		"v1-two-containers":          {wantErr: "cgroup paths name two containers"},
	}
	files, err := filepath.Glob("testdata/cgroup/*")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(tests) {
		t.Errorf("%d fixtures, %d cases: give every fixture a case", len(files), len(tests))
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata/cgroup", name))
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseCgroup(data)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseCgroup = %+v, %v; want error %q", got, err, tt.wantErr)
				}
				if tt.wantErr == ErrNotInPod.Error() && !errors.Is(err, ErrNotInPod) {
					t.Errorf("error %v is not ErrNotInPod", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseCgroup: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// Whatever the file holds, the parser does not panic, and what it finds is a well-formed pod UID and
// container ID that the file names.
func FuzzParseCgroup(f *testing.F) {
	files, _ := filepath.Glob("testdata/cgroup/*")
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("0::/kubepods/pod/\n:::\n0::/kubepods.slice/kubepods-pod.slice/crio-.scope"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseCgroup(data)
		if err != nil {
			if c != (Container{}) {
				t.Fatalf("error %v with a container %+v", err, c)
			}
			return
		}
		if _, ok := checkUID(c.PodUID); !ok {
			t.Fatalf("pod uid %q is not a uid", c.PodUID)
		}
		if len(c.ContainerID) != 64 || !isHexString(c.ContainerID) {
			t.Fatalf("container id %q is not 64 hex digits", c.ContainerID)
		}
		s := string(data)
		if !strings.Contains(s, c.ContainerID) || !(strings.Contains(s, c.PodUID) || strings.Contains(s, strings.ReplaceAll(c.PodUID, "-", "_"))) {
			t.Fatalf("found %+v, which the input does not name", c)
		}
	})
}
