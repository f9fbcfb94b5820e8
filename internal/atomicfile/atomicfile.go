// Package atomicfile replaces a file's content at once: readers see the old content or the new, never a
// mix, and a failed write leaves the old file as it was.
package atomicfile

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
)

// Options say how the file is written.
type Options struct {
	// Mode is the new file's permission bits, set before any byte is written. Zero: 0600.
	Mode os.FileMode
	// NoSync skips the fsync before the rename: a power loss may then leave the old content (or, on some
	// file systems, an empty file), which suits data that is rebuilt anyway.
	NoSync bool
}

// Write writes what write produces to a temporary file in path's directory (buffered), syncs it unless
// told not to, and renames it over path.
func Write(path string, o Options, write func(io.Writer) error) (err error) {
	if o.Mode == 0 {
		o.Mode = 0o600
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(o.Mode); err != nil {
		return err
	}
	w := bufio.NewWriterSize(tmp, 64<<10)
	if err := write(w); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if !o.NoSync {
		if err := tmp.Sync(); err != nil {
			return err
		}
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// WriteBytes is Write of data.
func WriteBytes(path string, data []byte, o Options) error {
	return Write(path, o, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}
