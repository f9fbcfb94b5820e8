package unix

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	sysunix "golang.org/x/sys/unix"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/peer"
	"github.com/kithid/kith/attestation/procfs"
)

// Attest derives the workload's selectors from creds: unix:uid, unix:gid, unix:user and unix:group
// (when the names resolve), unix:supplementary_gid for each group in /proc/<pid>/status, and
// unix:path and unix:sha256 of the executable. An unreadable executable is logged and its
// selectors skipped. If, after reading, the pid no longer has creds.StartTime, Attest returns an
// error wrapping [ErrProcessChanged].
//
// All reads go through one open /proc/<pid> directory, which the kernel binds to one process,
// and the last read checks that process's start time, so every selector describes the process
// that connected even if the pid is reused meanwhile.
func (a *Attestor) Attest(ctx context.Context, creds peer.Credentials) ([]attestation.Selector, error) {
	if creds.PID <= 0 {
		return nil, fmt.Errorf("attest pid %d: not a process id", creds.PID)
	}
	dir := filepath.Join(a.procRoot, strconv.Itoa(int(creds.PID)))
	dirfd, err := sysunix.Open(dir, sysunix.O_RDONLY|sysunix.O_DIRECTORY|sysunix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("attest pid %d: process gone (%v): %w", creds.PID, err, ErrProcessChanged)
	}
	// No check is needed yet: if the pid was already reused, dirfd belongs to the new process and
	// the final check sees its start time; if the process exits, reads through dirfd fail.
	defer sysunix.Close(dirfd)

	uid := strconv.FormatUint(uint64(creds.UID), 10)
	gid := strconv.FormatUint(uint64(creds.GID), 10)
	sels := make([]attestation.Selector, 0, 10)
	add := func(key, value string) {
		sels = append(sels, attestation.Selector{Type: attestation.TypeUnix, Key: key, Value: value})
	}
	add("uid", uid)
	add("gid", gid)
	if name, err := a.users.get(uid); err == nil && name != "" {
		add("user", name)
	} else {
		a.log.DebugContext(ctx, "workload user name not resolved", "pid", creds.PID, "uid", uid, "err", err)
	}
	if name, err := a.groups.get(gid); err == nil && name != "" {
		add("group", name)
	} else {
		a.log.DebugContext(ctx, "workload group name not resolved", "pid", creds.PID, "gid", gid, "err", err)
	}

	groups, err := procfs.ParseAt(dirfd, "status", parseStatusGroups)
	if err != nil {
		if cerr := recheck(dirfd, creds); cerr != nil { // a process that exited or changed, not a bad file
			return nil, cerr
		}
		return nil, fmt.Errorf("attest pid %d: %w", creds.PID, err)
	}
	for _, g := range groups {
		add("supplementary_gid", strconv.FormatUint(uint64(g), 10))
	}

	exe, exeErr := a.readExe(ctx, dirfd, creds)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("attest pid %d: %w", creds.PID, err)
	}
	if err := recheck(dirfd, creds); err != nil {
		return nil, err
	}
	if errors.Is(exeErr, ErrProcessChanged) {
		return nil, fmt.Errorf("attest pid %d: %w", creds.PID, exeErr)
	}
	switch {
	case exeErr != nil:
		a.log.WarnContext(ctx, "workload executable unreadable: unix:path and unix:sha256 selectors skipped",
			"pid", creds.PID, "err", exeErr)
	case exe.pathErr != nil:
		a.log.WarnContext(ctx, "workload executable path does not name its executable here: unix:path selector skipped",
			"pid", creds.PID, "path", exe.path, "err", exe.pathErr)
	default:
		add("path", exe.path)
	}
	if exeErr == nil {
		if exe.sumErr != nil {
			a.log.WarnContext(ctx, "workload executable not hashed: unix:sha256 selector skipped", "pid", creds.PID, "path", exe.path, "err", exe.sumErr)
		} else {
			add("sha256", exe.sum)
		}
	}
	return attestation.Normalize(sels), nil
}

// recheck returns an error wrapping ErrProcessChanged unless the process whose /proc directory is
// open as dirfd is alive and has creds.StartTime.
func recheck(dirfd int, creds peer.Credentials) error {
	start, err := procfs.StartTimeAt(dirfd, "stat")
	if err != nil {
		return fmt.Errorf("attest pid %d: process gone (%v): %w", creds.PID, err, ErrProcessChanged)
	}
	if start != creds.StartTime {
		return fmt.Errorf("attest pid %d: start time is %d, connected process had %d: %w", creds.PID, start, creds.StartTime, ErrProcessChanged)
	}
	return nil
}

// exeInfo is what attestation learns of a process's executable. path is the target of /proc/<pid>/exe as
// the process sees it; pathErr is set when that path, looked up in the agent's own mount namespace, is not
// the file the process runs (another mount namespace, a bind mount, a deleted or replaced file), so that a
// process cannot claim a path it does not run. sum is the SHA-256 of the running file itself.
type exeInfo struct {
	path    string
	pathErr error
	sum     string
	sumErr  error
}

// maxHashSize bounds the executables that are hashed: a larger file gets no unix:sha256 selector, so a
// process cannot make the agent read gigabytes per connection.
const maxHashSize = 512 << 20

// readExe reads the process's executable through its exe link, so that the running image is seen even if
// the file on disk was replaced. It fails with ErrProcessChanged when the process no longer runs the file
// it ran when it connected (creds.Exe), and with another error when the executable cannot be read or was
// not known at connect time. Hashes are cached by the fstat of the opened file.
func (a *Attestor) readExe(ctx context.Context, dirfd int, creds peer.Credentials) (exeInfo, error) {
	path, err := readlinkAt(dirfd, "exe")
	if err != nil {
		return exeInfo{}, err
	}
	fd, err := sysunix.Openat(dirfd, "exe", sysunix.O_RDONLY|sysunix.O_CLOEXEC, 0)
	if err != nil {
		return exeInfo{}, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st sysunix.Stat_t
	if err := sysunix.Fstat(fd, &st); err != nil {
		return exeInfo{}, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&sysunix.S_IFMT != sysunix.S_IFREG {
		return exeInfo{}, fmt.Errorf("%s is not a regular file", path)
	}
	// The process may have exec'd between reading the link and opening it; then path and contents disagree.
	if again, err := readlinkAt(dirfd, "exe"); err != nil || again != path {
		return exeInfo{}, fmt.Errorf("executable changed while reading (%s, then %s): %w", path, again, ErrProcessChanged)
	}
	id := peer.FileID{Dev: uint64(st.Dev), Ino: st.Ino} //nolint:unconvert // Dev's type differs across architectures.
	switch {
	case !creds.Exe.Known():
		return exeInfo{}, errors.New("the executable could not be read when the connection was accepted")
	case id != creds.Exe:
		return exeInfo{}, fmt.Errorf("the process runs %s, not the program it ran when it connected: %w", path, ErrProcessChanged)
	}
	info := exeInfo{path: path}
	var pst sysunix.Stat_t
	if err := sysunix.Stat(path, &pst); err != nil {
		info.pathErr = err
	} else if (peer.FileID{Dev: uint64(pst.Dev), Ino: pst.Ino}) != id { //nolint:unconvert // as above
		info.pathErr = errors.New("that path is another file in the agent's mount namespace")
	}
	key := exeKey{
		path:    path,
		dev:     uint64(st.Dev), //nolint:unconvert // Dev's type differs across architectures.
		ino:     st.Ino,
		size:    st.Size,
		mtimeNs: st.Mtim.Nano(),
		ctimeNs: st.Ctim.Nano(),
	}
	if st.Size > maxHashSize {
		info.sumErr = fmt.Errorf("%d bytes, more than the %d hashed", st.Size, maxHashSize)
		return info, nil
	}
	info.sum, info.sumErr = a.hash(ctx, key, f, creds.UID)
	return info, nil
}

// hash returns the file's SHA-256 from the cache, or reads it: one read per file version however many
// connections ask at once, at most hashWorkers files read at a time, and at most one file per uid, so
// that one user cannot keep the agent reading for everyone (a uid asking for a second new file meanwhile
// gets no hash, and no unix:sha256, until the first is done). A read, once started, finishes even if the
// connection that started it goes away: the others waiting for it still need it.
func (a *Attestor) hash(ctx context.Context, key exeKey, f *os.File, uid uint32) (string, error) {
	if sum, ok := a.hashes.get(key); ok {
		return sum, nil
	}
	c, first, err := a.inflight.join(key, uid)
	if err != nil {
		return "", err
	}
	if !first {
		select {
		case <-c.done:
			return c.sum, c.err
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	defer a.inflight.finish(key, c, uid)
	a.hashSlots <- struct{}{} // bounded work ahead (≤ hashWorkers reads of ≤ maxHashSize): no cancellation
	defer func() { <-a.hashSlots }()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 256<<10)); err != nil {
		c.err = fmt.Errorf("hash %s: %w", key.path, err)
		return "", c.err
	}
	c.sum = hex.EncodeToString(h.Sum(nil))
	a.hashed.Add(1)
	a.hashes.put(key, c.sum)
	return c.sum, nil
}

func readlinkAt(dirfd int, name string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := sysunix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", &os.PathError{Op: "readlink", Path: name, Err: err}
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		buf = make([]byte, 2*len(buf))
	}
}
