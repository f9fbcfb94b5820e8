package procfs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	sysunix "golang.org/x/sys/unix"
)

// Files are read into pooled buffers, one after another, each parsed from exactly its own bytes.
func TestParseAtReusesBuffersSafely(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("0123456789", 1000)  // longer than a pooled buffer: it grows
	huge := strings.Repeat("0123456789", 7<<10) // over 64 KiB: not put back in the pool
	for name, content := range map[string]string{"long": long, "huge": huge, "short": "abc", "empty": ""} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	copyOut := func(b []byte) (string, error) { return string(b), nil }
	tests := []struct {
		name, file, want string
	}{
		{name: "a file longer than the buffer", file: "long", want: long},
		{name: "a short file after a long one", file: "short", want: "abc"},
		{name: "an empty file", file: "empty", want: ""},
		{name: "a file over 64 KiB", file: "huge", want: huge},
		{name: "a short file after a huge one", file: "short", want: "abc"},
		{name: "a long file again", file: "long", want: long},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAt(sysunix.AT_FDCWD, filepath.Join(dir, tt.file), copyOut)
			if err != nil || got != tt.want {
				t.Errorf("got %d bytes (%v), want %d", len(got), err, len(tt.want))
			}
		})
	}
	t.Run("a missing file is ErrNotExist", func(t *testing.T) {
		if _, err := ParseAt(sysunix.AT_FDCWD, filepath.Join(dir, "missing"), copyOut); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("err = %v, want ErrNotExist", err)
		}
	})
}
