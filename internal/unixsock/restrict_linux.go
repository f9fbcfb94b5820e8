package unixsock

import (
	"net"

	sysunix "golang.org/x/sys/unix"
)

func peerIDs(c *net.UnixConn) (ids, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return ids{}, err
	}
	var (
		u    *sysunix.Ucred
		uerr error
	)
	if err := raw.Control(func(fd uintptr) {
		u, uerr = sysunix.GetsockoptUcred(int(fd), sysunix.SOL_SOCKET, sysunix.SO_PEERCRED)
	}); err != nil {
		return ids{}, err
	}
	if uerr != nil {
		return ids{}, uerr
	}
	return ids{pid: u.Pid, uid: u.Uid, gid: u.Gid}, nil
}
