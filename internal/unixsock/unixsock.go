// Package unixsock opens the unix sockets Kith serves on: the server's admin socket and the agent's
// Workload API, SDS and ext_authz sockets. [Listen] creates a socket with its final mode before any
// other process can reach it; [Restrict] refuses connections from processes whose uid and gid are not
// on an allow list.
package unixsock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
)

// Listen listens on a unix socket at path with the given mode, creating its directory (0755) if missing.
// A stale socket left by a previous run is replaced; a live one, or a file that is not a socket, is an
// error.
//
// The socket is bound in a fresh private directory (0700, made beside path), given its mode there and
// renamed into place, so it appears at path already with its final mode: no other process can connect
// in between (binding at path and then chmod-ing would leave a window with the umask's mode, 0777 under
// umask 000). Setting the umask around bind instead would not do: the umask is process-wide, and every
// goroutine creating a file meanwhile would get it.
func Listen(path string, mode os.FileMode) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket: remove it or choose another path", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is in use by another process", path)
		}
	}
	private, err := os.MkdirTemp(dir, ".kith-")
	if err != nil {
		return nil, fmt.Errorf("make a private directory to bind %s in: %w", path, err)
	}
	defer os.RemoveAll(private)
	if err := os.Chmod(private, 0o700); err != nil {
		return nil, err
	}
	tmp := filepath.Join(private, "s")
	lis, err := bind(tmp)
	if err != nil {
		return nil, fmt.Errorf("bind %s: %w", path, err)
	}
	ul := lis.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, mode); err != nil {
		ul.Close()
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		ul.Close()
		return nil, fmt.Errorf("move socket into place at %s: %w", path, err)
	}
	return &listener{UnixListener: ul, path: path}, nil
}

// listener removes its socket file on Close, as net.UnixListener does for the path it bound.
type listener struct {
	*net.UnixListener
	path string
	once sync.Once
}

func (l *listener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
			err = rerr
		}
	})
	return err
}
