package unixsock

import (
	"net"
	"os"
	"path/filepath"
	"strconv"

	sysunix "golang.org/x/sys/unix"
)

// maxPath is the longest socket path bind takes (sun_path is 108 bytes with the terminating NUL).
const maxPath = 107

// bind listens at path. When path is too long for sun_path (the private directory adds a few bytes to the
// caller's path), it binds through /proc/self/fd/<fd of the directory>/<name>, which is short and names
// the same place.
func bind(path string) (net.Listener, error) {
	if len(path) <= maxPath {
		return net.Listen("unix", path)
	}
	dir, err := os.OpenFile(filepath.Dir(path), sysunix.O_PATH|sysunix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	return net.Listen("unix", "/proc/self/fd/"+strconv.Itoa(int(dir.Fd()))+"/"+filepath.Base(path))
}
