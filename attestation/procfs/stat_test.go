package procfs

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// statLine builds a well-formed /proc/<pid>/stat line with the given comm and start time.
func statLine(comm string, start uint64) string {
	// Fields 3..21, then starttime (22), then a few more.
	return fmt.Sprintf("1234 (%s) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 %d 1000 200 18446744073709551615\n", comm, start)
}

func TestParseStatStartTime(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    uint64
		wantErr bool
	}{
		{name: "a plain command name is parsed", in: statLine("sleep", 98765), want: 98765},
		{name: "a command name with spaces is parsed", in: statLine("my app", 5), want: 5},
		{name: "a command name with a closing parenthesis is parsed", in: statLine("a) S 1 2 3", 77), want: 77},
		{name: "a command name made of parentheses is parsed", in: statLine(")()(", 1), want: 1},
		{name: "a command name with a newline is parsed", in: statLine("a\nb", 12), want: 12},
		{name: "a real line from kernel 6 is parsed", in: "1 (systemd) S 0 1 1 0 -1 4194560 52917 3041627 105 1483 109 155 5727 2476 20 0 1 0 24 22593536 3288 18446744073709551615 1 1 0 0 0 0 671173123 4096 1260 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n", want: 24},
		{name: "an empty input is an error", in: "", wantErr: true},
		{name: "a missing closing parenthesis is an error", in: "1 (sleep S 1 2", wantErr: true},
		{name: "a missing opening parenthesis is an error", in: "1 sleep) S 1 2", wantErr: true},
		{name: "a truncated line is an error", in: "1 (sleep) S 1 2 3", wantErr: true},
		{name: "a non-numeric start time is an error", in: strings.Replace(statLine("x", 1), " 1 1000 ", " abc 1000 ", 1), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseStartTime([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseStartTime() error = %v, wantErr %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseStartTime() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add("sleep", uint64(98765), []byte("1 (x) S"))
	f.Add("a) S 1 2 (b", uint64(0), []byte(""))
	f.Add("", uint64(18446744073709551615), []byte(")))"))
	f.Fuzz(func(t *testing.T, comm string, start uint64, raw []byte) {
		// Arbitrary input never panics.
		_, _ = ParseStartTime(raw)
		_, _ = ParseStartTime([]byte(comm))
		// Well-formed input (the kernel never puts NUL in comm) returns the start time.
		if strings.ContainsRune(comm, 0) {
			return
		}
		got, err := ParseStartTime([]byte(statLine(comm, start)))
		if err != nil {
			t.Fatalf("ParseStartTime(comm %q) error: %v", comm, err)
		}
		if got != start {
			t.Fatalf("ParseStartTime(comm %q) = %d, want %d", comm, got, start)
		}
	})
}
