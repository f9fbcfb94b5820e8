package gitsync

import (
	"io"
	"os"
	"syscall"
)

// openNoFollow opens a file for reading, refusing a symbolic link.
func openNoFollow(p string) (io.ReadCloser, error) {
	return os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
}
