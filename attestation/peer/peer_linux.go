package peer

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"syscall"

	sysunix "golang.org/x/sys/unix"

	"github.com/kithid/kith/attestation/procfs"
)

// PeerCredentials reads the credentials of the process at the other end of a unix connection
// (SO_PEERCRED) and its start time from /proc/<pid>/stat. Where the kernel supports SO_PEERPIDFD
// it also checks, after reading the start time, that the connecting process is still alive, so
// the start time cannot belong to a later process that reused the pid.
func PeerCredentials(conn *net.UnixConn) (Credentials, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return Credentials{}, fmt.Errorf("read peer credentials: %w", err)
	}
	var (
		ucred      *sysunix.Ucred
		uerr, perr error
		pidfd      = -1
	)
	if err := raw.Control(func(fd uintptr) {
		ucred, uerr = sysunix.GetsockoptUcred(int(fd), sysunix.SOL_SOCKET, sysunix.SO_PEERCRED)
		if uerr == nil {
			pidfd, perr = sysunix.GetsockoptInt(int(fd), sysunix.SOL_SOCKET, sysunix.SO_PEERPIDFD)
		}
	}); err != nil {
		return Credentials{}, fmt.Errorf("read peer credentials: %w", err)
	}
	if uerr != nil {
		return Credentials{}, fmt.Errorf("read peer credentials: SO_PEERCRED: %w", uerr)
	}
	if perr == nil && pidfd >= 0 {
		defer sysunix.Close(pidfd)
	} else if errors.Is(perr, syscall.ESRCH) {
		return Credentials{}, fmt.Errorf("read peer credentials of pid %d: %w", ucred.Pid, ErrProcessChanged)
	}
	if ucred.Pid <= 0 {
		return Credentials{}, fmt.Errorf("read peer credentials: peer pid is %d: the peer is in a pid namespace this process cannot see", ucred.Pid)
	}
	dir := filepath.Join("/proc", strconv.Itoa(int(ucred.Pid)))
	start, err := procfs.StartTimeAt(sysunix.AT_FDCWD, filepath.Join(dir, "stat"))
	if err != nil {
		return Credentials{}, fmt.Errorf("read peer credentials of pid %d: process gone (%v): %w", ucred.Pid, err, ErrProcessChanged)
	}
	// What the process runs now, to refuse it later if it has executed something else by then. Unreadable
	// (another user's process and no CAP_SYS_PTRACE): zero, and no path or hash selectors.
	var exe FileID
	var st sysunix.Stat_t
	if sysunix.Stat(filepath.Join(dir, "exe"), &st) == nil {
		exe = FileID{Dev: uint64(st.Dev), Ino: st.Ino} //nolint:unconvert // Dev's type differs across architectures.
	}
	if perr == nil && pidfd >= 0 {
		// Signal 0 checks existence only. EPERM means the process exists but belongs to someone else.
		if err := sysunix.PidfdSendSignal(pidfd, 0, nil, 0); errors.Is(err, syscall.ESRCH) {
			return Credentials{}, fmt.Errorf("read peer credentials of pid %d: %w", ucred.Pid, ErrProcessChanged)
		}
	}
	return Credentials{PID: ucred.Pid, UID: ucred.Uid, GID: ucred.Gid, StartTime: start, Exe: exe}, nil
}
