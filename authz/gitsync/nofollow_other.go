//go:build !linux

package gitsync

import (
	"io"
	"os"
)

// openNoFollow opens a file for reading (the walk found it a regular file).
func openNoFollow(p string) (io.ReadCloser, error) { return os.Open(p) }
