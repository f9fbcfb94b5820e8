package unixsock

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestListen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "s.sock")

	t.Run("a new socket gets its mode and directory", func(t *testing.T) {
		l, err := Listen(path, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("mode = %v (err %v), want 0600", fi.Mode().Perm(), err)
		}
		t.Run("a live socket is not taken over", func(t *testing.T) {
			if _, err := Listen(path, 0o600); err == nil || !strings.Contains(err.Error(), "in use") {
				t.Errorf("err = %v, want in use", err)
			}
		})
	})
	t.Run("a stale socket is replaced", func(t *testing.T) {
		stale := filepath.Join(dir, "stale.sock")
		l, err := net.Listen("unix", stale)
		if err != nil {
			t.Fatal(err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close()
		l2, err := Listen(stale, 0o777)
		if err != nil {
			t.Fatalf("replace stale socket: %v", err)
		}
		l2.Close()
	})
	t.Run("a regular file is refused", func(t *testing.T) {
		file := filepath.Join(dir, "file")
		os.WriteFile(file, nil, 0o600)
		if _, err := Listen(file, 0o600); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Errorf("err = %v, want not a socket", err)
		}
	})
}
