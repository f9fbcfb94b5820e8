package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.json")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		o        Options
		write    func(io.Writer) error
		wantErr  bool
		want     string
		wantMode os.FileMode
	}{
		{name: "replaces, 0600 by default", write: func(w io.Writer) error { _, err := io.WriteString(w, "new"); return err },
			want: "new", wantMode: 0o600},
		{name: "mode given, no sync", o: Options{Mode: 0o640, NoSync: true},
			write: func(w io.Writer) error { _, err := io.WriteString(w, "newer"); return err }, want: "newer", wantMode: 0o640},
		{name: "a failed write leaves the file", write: func(w io.Writer) error {
			io.WriteString(w, "partial")
			return errors.New("disk full")
		}, wantErr: true, want: "newer", wantMode: 0o640},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Write(path, tt.o, tt.write)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Write: %v, want error %v", err, tt.wantErr)
			}
			got, _ := os.ReadFile(path)
			st, _ := os.Stat(path)
			if string(got) != tt.want || st.Mode().Perm() != tt.wantMode {
				t.Errorf("file = %q mode %o, want %q mode %o", got, st.Mode().Perm(), tt.want, tt.wantMode)
			}
			left, _ := filepath.Glob(filepath.Join(dir, ".*"))
			if len(left) != 0 {
				t.Errorf("temporary files left: %v", left)
			}
		})
	}
}
