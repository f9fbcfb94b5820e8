// Package unixsock opens the unix sockets Kith serves on: the server's admin socket and the agent's
// Workload API, SDS and ext_authz sockets.
package unixsock

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// Listen listens on a unix socket at path with the given mode, creating its directory (0755) if missing.
// A stale socket left by a previous run is replaced; a live one, or a file that is not a socket, is an
// error.
func Listen(path string, mode os.FileMode) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
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
		os.Remove(path)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, mode); err != nil {
		lis.Close()
		return nil, err
	}
	return lis, nil
}
