package unix

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// statLine builds a well-formed /proc/<pid>/stat line with the given comm and start time.
func statLine(comm string, start uint64) string {
	// Fields 3..21, then starttime (22), then a few more.
	return fmt.Sprintf("1234 (%s) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 %d 1000 200 18446744073709551615\n", comm, start)
}

func TestParseStatusGroups(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []uint32
		wantErr bool
	}{
		{name: "several groups are parsed", in: "Name:\tbash\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 24 27 1000 \nNgid:\t0\n", want: []uint32{4, 24, 27, 1000}},
		{name: "no groups give an empty list", in: "Name:\tbash\nGroups:\t\n"},
		{name: "a last line without newline is parsed", in: "Groups:\t5", want: []uint32{5}},
		{name: "a missing groups line is an error", in: "Name:\tbash\n", wantErr: true},
		{name: "a non-numeric group is an error", in: "Groups:\tx\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatusGroups([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseStatusGroups() error = %v, wantErr %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parseStatusGroups() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
