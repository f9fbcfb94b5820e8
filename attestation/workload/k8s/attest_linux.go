package k8s

import (
	"fmt"
	"path/filepath"
	"strconv"

	sysunix "golang.org/x/sys/unix"

	"github.com/kithid/kith/attestation/peer"
	"github.com/kithid/kith/attestation/procfs"
)

type peerCredentials = peer.Credentials

// container reads the process's cgroups through one open /proc/<pid> directory and checks, after, that
// the pid still belongs to the process that connected.
func (a *Attestor) container(creds peer.Credentials) (Container, error) {
	if creds.PID <= 0 {
		return Container{}, fmt.Errorf("k8s attestor: pid %d is not a process id", creds.PID)
	}
	dir := filepath.Join(a.cfg.ProcRoot, strconv.Itoa(int(creds.PID)))
	dirfd, err := sysunix.Open(dir, sysunix.O_RDONLY|sysunix.O_DIRECTORY|sysunix.O_CLOEXEC, 0)
	if err != nil {
		return Container{}, fmt.Errorf("k8s attestor: pid %d: process gone (%v): %w", creds.PID, err, peer.ErrProcessChanged)
	}
	defer sysunix.Close(dirfd)
	c, perr := procfs.ParseAt(dirfd, "cgroup", ParseCgroup)
	start, err := procfs.StartTimeAt(dirfd, "stat")
	if err != nil {
		return Container{}, fmt.Errorf("k8s attestor: pid %d: process gone (%v): %w", creds.PID, err, peer.ErrProcessChanged)
	}
	if start != creds.StartTime {
		return Container{}, fmt.Errorf("k8s attestor: pid %d: start time is %d, connected process had %d: %w", creds.PID, start, creds.StartTime, peer.ErrProcessChanged)
	}
	if perr != nil {
		return Container{}, fmt.Errorf("k8s attestor: pid %d: %w", creds.PID, perr)
	}
	return c, nil
}
