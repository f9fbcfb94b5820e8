package procfs

import (
	"os"
	"sync"
	"syscall"

	sysunix "golang.org/x/sys/unix"
)

// StartTimeAt reads the start time (clock ticks since boot) from name, a /proc/<pid>/stat file, relative
// to dirfd: an open /proc/<pid> directory with name "stat", or unix.AT_FDCWD with a path.
func StartTimeAt(dirfd int, name string) (uint64, error) {
	return ParseAt(dirfd, name, ParseStartTime)
}

// readBufs holds the buffers /proc files are read into: every attestation reads two (status and stat,
// besides the stat read once per connection for its credentials), and a Workload API or SDS stream is
// attested when it opens, so ten thousand streams opening would otherwise leave ≈ 95 MB of garbage behind.
var readBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// ParseAt reads a small file relative to dirfd into a pooled buffer and returns what parse makes of
// it; parse must not keep the bytes. Unlike os.ReadFile it does not fstat first: procfs files report
// size 0 anyway.
func ParseAt[T any](dirfd int, name string, parse func([]byte) (T, error)) (T, error) {
	bp := readBufs.Get().(*[]byte)
	buf, err := readFileAt(dirfd, name, (*bp)[:0])
	defer func() {
		if cap(buf) <= 64<<10 { // a huge status file is not worth keeping
			*bp = buf[:0]
			readBufs.Put(bp)
		}
	}()
	if err != nil {
		var zero T
		return zero, err
	}
	return parse(buf)
}

// readFileAt reads a small file relative to dirfd, appending to buf.
func readFileAt(dirfd int, name string, buf []byte) ([]byte, error) {
	fd, err := sysunix.Openat(dirfd, name, sysunix.O_RDONLY|sysunix.O_CLOEXEC, 0)
	if err != nil {
		return buf, &os.PathError{Op: "open", Path: name, Err: err}
	}
	defer sysunix.Close(fd)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := sysunix.Read(fd, buf[len(buf):cap(buf)])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return buf, &os.PathError{Op: "read", Path: name, Err: err}
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}
