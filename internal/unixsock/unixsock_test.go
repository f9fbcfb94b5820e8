package unixsock

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
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
	t.Run("a path near the 107-byte limit is bound through the private directory's descriptor", func(t *testing.T) {
		if len(dir) > 90 {
			t.Skipf("the temporary directory %s is too long for this test", dir)
		}
		long := filepath.Join(dir, strings.Repeat("d", 95-len(dir)))
		long = filepath.Join(long, strings.Repeat("s", 107-len(long)-1-len(".sock"))+".sock")
		if len(long) != 107 {
			t.Fatalf("test path is %d bytes, want 107", len(long))
		}
		l, err := Listen(long, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		c, err := net.Dial("unix", long)
		if err != nil {
			t.Fatalf("dial the socket at its path: %v", err)
		}
		c.Close()
	})
	t.Run("a regular file is refused", func(t *testing.T) {
		file := filepath.Join(dir, "file")
		os.WriteFile(file, nil, 0o600)
		if _, err := Listen(file, 0o600); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Errorf("err = %v, want not a socket", err)
		}
	})
}

// With umask 000 a socket bound at its path is 0777 until chmod-ed; the socket must never be seen
// there with any mode but the one asked for.
func TestListenNeverShowsAWiderMode(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o1777); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "admin.sock")
	stop := make(chan struct{})
	seen := make(chan os.FileMode, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if fi, err := os.Lstat(path); err == nil && fi.Mode().Perm() != 0o600 {
				select {
				case seen <- fi.Mode().Perm():
				default:
				}
				return
			}
		}
	}()
	for range 500 {
		l, err := Listen(path, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
	}
	close(stop)
	wg.Wait()
	select {
	case m := <-seen:
		t.Errorf("the socket was seen at its path with mode %v, want only 0600", m)
	default:
	}
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("left behind in %s: %v", dir, left)
	}
}
