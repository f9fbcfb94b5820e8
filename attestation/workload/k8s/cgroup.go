package k8s

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// Container is where a process runs, as its cgroup paths say.
type Container struct {
	PodUID      string // as in the pod's metadata.uid (dashes), or a static pod's config hash
	ContainerID string // 64 hex digits, without the runtime's prefix
}

// ErrNotInPod is what [ParseCgroup] returns for a process whose cgroups name no Kubernetes pod: a
// process on the host, or in a container that no kubelet manages.
var ErrNotInPod = errors.New("the process is not in a kubernetes pod")

// ParseCgroup finds the pod UID and container ID in the contents of /proc/<pid>/cgroup, for cgroup v1
// (one line per hierarchy) and v2 (the single "0::" line), with the kubelet's cgroupfs driver
// (/kubepods/burstable/pod<uid>/<id>) or systemd driver (/kubepods.slice/kubepods-burstable.slice/
// kubepods-burstable-pod<uid_with_underscores>.slice/<runtime>-<id>.scope) and the runtimes'
// prefixes: containerd (cri-containerd-), CRI-O (crio-), Docker (docker-). Paths nested under another
// cgroup (kind, a kubelet in a container) are found too.
//
// It returns [ErrNotInPod] when no line names a container of a pod, and an error when lines name
// different ones (the process cannot be in two). A pod's sandbox (pause) container and CRI-O's conmon
// are containers like another, found by their IDs, which no pod's container statuses list.
func ParseCgroup(data []byte) (Container, error) {
	var found Container
	for len(data) > 0 {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte("\n"))
		// hierarchy-ID:controllers:path; the path may itself hold colons.
		_, rest, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		_, path, ok := bytes.Cut(rest, []byte(":"))
		if !ok {
			continue
		}
		c, ok := parsePath(string(path))
		if !ok {
			continue
		}
		if found != (Container{}) && found != c {
			return Container{}, fmt.Errorf("cgroup paths name two containers: pod %s container %s, and pod %s container %s",
				found.PodUID, found.ContainerID, c.PodUID, c.ContainerID)
		}
		found = c
	}
	if found == (Container{}) {
		return Container{}, ErrNotInPod
	}
	return found, nil
}

// parsePath finds pod<uid> and, below it, a container ID in one cgroup path.
func parsePath(path string) (Container, bool) {
	segs := strings.Split(path, "/")
	for i, seg := range segs {
		uid, ok := podUID(seg)
		if !ok || i+1 >= len(segs) {
			continue
		}
		// The container's cgroup is the one right below the pod's.
		id, ok := containerID(segs[i+1])
		if !ok {
			return Container{}, false
		}
		return Container{PodUID: uid, ContainerID: id}, true
	}
	return Container{}, false
}

// podUID reads the pod UID from a pod cgroup's name: "pod<uid>" (cgroupfs) or
// "[kubelet-]kubepods[-<qos>]-pod<uid with _ for ->.slice" (systemd).
func podUID(seg string) (string, bool) {
	if rest, ok := strings.CutSuffix(seg, ".slice"); ok {
		if !strings.Contains(rest, "kubepods") {
			return "", false
		}
		i := strings.LastIndex(rest, "-pod")
		if i < 0 {
			return "", false
		}
		return checkUID(strings.ReplaceAll(rest[i+len("-pod"):], "_", "-"))
	}
	if rest, ok := strings.CutPrefix(seg, "pod"); ok {
		return checkUID(rest)
	}
	return "", false
}

// checkUID accepts a UUID in its canonical form, or a static pod's config hash (32 hex digits).
func checkUID(s string) (string, bool) {
	switch len(s) {
	case 36:
		for i, c := range s {
			if i == 8 || i == 13 || i == 18 || i == 23 {
				if c != '-' {
					return "", false
				}
			} else if !isHex(c) {
				return "", false
			}
		}
		return s, true
	case 32:
		return s, isHexString(s)
	}
	return "", false
}

// containerID reads a container ID from a container cgroup's name: "<id>" (cgroupfs) or
// "<runtime>-<id>.scope" (systemd), where runtime is cri-containerd, crio or docker. A CRI-O conmon
// scope (crio-conmon-<id>.scope) is not a container.
func containerID(seg string) (string, bool) {
	s := strings.TrimSuffix(seg, ".scope")
	if strings.HasPrefix(s, "crio-conmon-") {
		return "", false
	}
	for _, p := range []string{"cri-containerd-", "crio-", "docker-", "containerd-"} {
		if rest, ok := strings.CutPrefix(s, p); ok {
			s = rest
			break
		}
	}
	if len(s) != 64 || !isHexString(s) {
		return "", false
	}
	return s, true
}

func isHex(c rune) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' }

func isHexString(s string) bool {
	for _, c := range s {
		if !isHex(c) {
			return false
		}
	}
	return true
}
