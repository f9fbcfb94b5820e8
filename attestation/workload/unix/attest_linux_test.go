package unix

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	sysunix "golang.org/x/sys/unix"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/peer"
	"github.com/kithid/kith/attestation/procfs"

	"github.com/kithid/kith/internal/testutil"
)

func sel(key, value string) attestation.Selector {
	return attestation.Selector{Type: attestation.TypeUnix, Key: key, Value: value}
}

// selfCredentials returns the test process's credentials as PeerCredentials would see them.
func selfCredentials(t testing.TB) peer.Credentials {
	t.Helper()
	return processCredentials(t, os.Getpid())
}

func processCredentials(t testing.TB, pid int) peer.Credentials {
	t.Helper()
	start, err := procfs.StartTimeAt(sysunix.AT_FDCWD, filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		t.Fatalf("read start time of pid %d: %v", pid, err)
	}
	return peer.Credentials{PID: int32(pid), UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), StartTime: start,
		Exe: fileID(t, filepath.Join("/proc", strconv.Itoa(pid), "exe"))}
}

// fileID is the device and inode of the file at path (following links).
func fileID(t testing.TB, path string) peer.FileID {
	t.Helper()
	var st sysunix.Stat_t
	if err := sysunix.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return peer.FileID{Dev: uint64(st.Dev), Ino: st.Ino} //nolint:unconvert // Dev's type differs across architectures.
}

func fileSHA256(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// byKey keeps the selectors with the given keys.
func byKey(sels []attestation.Selector, keys ...string) []attestation.Selector {
	var out []attestation.Selector
	for _, s := range sels {
		for _, k := range keys {
			if s.Key == k {
				out = append(out, s)
			}
		}
	}
	return out
}

func TestAttestOwnProcess(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe, err = filepath.EvalSymlinks(exe)
	if err != nil {
		t.Fatal(err)
	}
	a := New(Config{})
	got, err := a.Attest(t.Context(), selfCredentials(t))
	if err != nil {
		t.Fatalf("Attest() error: %v", err)
	}
	want := attestation.Normalize([]attestation.Selector{
		sel("uid", strconv.Itoa(os.Getuid())),
		sel("gid", strconv.Itoa(os.Getgid())),
		sel("path", exe),
		sel("sha256", fileSHA256(t, exe)),
	})
	if diff := cmp.Diff(want, byKey(got, "uid", "gid", "path", "sha256")); diff != "" {
		t.Errorf("Attest() mismatch (-want +got):\n%s", diff)
	}
	for _, s := range got {
		if err := s.Validate(); err != nil {
			t.Errorf("Attest() returned an invalid selector: %v", err)
		}
	}
	// A second attestation is served from the hash cache.
	if _, err := a.Attest(t.Context(), selfCredentials(t)); err != nil {
		t.Fatalf("second Attest() error: %v", err)
	}
	if got := a.hashed.Load(); got != 1 {
		t.Errorf("executable hashed %d times over two attestations, want 1", got)
	}
}

func TestAttestRejectsChangedProcess(t *testing.T) {
	t.Run("a process that exited is rejected", func(t *testing.T) {
		cmd := exec.Command("sleep", "10")
		if err := cmd.Start(); err != nil {
			t.Skipf("cannot start sleep: %v", err)
		}
		creds := processCredentials(t, cmd.Process.Pid)
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		got, err := New(Config{}).Attest(t.Context(), creds)
		if !errors.Is(err, ErrProcessChanged) {
			t.Fatalf("Attest() error = %v, want ErrProcessChanged", err)
		}
		if got != nil {
			t.Errorf("Attest() returned selectors %v for a process that exited", got)
		}
	})
	t.Run("a live pid with another start time is rejected", func(t *testing.T) {
		creds := selfCredentials(t)
		creds.StartTime++
		got, err := New(Config{}).Attest(t.Context(), creds)
		if !errors.Is(err, ErrProcessChanged) {
			t.Fatalf("Attest() error = %v, want ErrProcessChanged", err)
		}
		if got != nil {
			t.Errorf("Attest() returned selectors %v for a reused pid", got)
		}
	})
}

// fakeProc writes a /proc/<pid> tree for pid 4242 with start time 777 and the given exe link target.
func fakeProc(t *testing.T, exeTarget string) (root string, creds peer.Credentials) {
	t.Helper()
	root = t.TempDir()
	dir := filepath.Join(root, "4242")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("stat", statLine("fake app) S", 777))
	write("status", "Name:\tfake\nUid:\t1000\t1000\t1000\t1000\nGroups:\t27 1000\n")
	if err := os.Symlink(exeTarget, filepath.Join(dir, "exe")); err != nil {
		t.Fatal(err)
	}
	creds = peer.Credentials{PID: 4242, UID: 1000, GID: 1000, StartTime: 777}
	var st sysunix.Stat_t
	if sysunix.Stat(exeTarget, &st) == nil {
		creds.Exe = peer.FileID{Dev: uint64(st.Dev), Ino: st.Ino} //nolint:unconvert // as in fileID
	}
	return root, creds
}

func fakeLookups(cfg Config) Config {
	cfg.LookupUser = func(uid string) (string, error) {
		if uid == "1000" {
			return "app", nil
		}
		return "", errors.New("no such user")
	}
	cfg.LookupGroup = func(gid string) (string, error) {
		if gid == "1000" {
			return "apps", nil
		}
		return "", errors.New("no such group")
	}
	return cfg
}

func TestAttestFakeProc(t *testing.T) {
	t.Run("an unreadable executable skips path and sha256 with a warning", func(t *testing.T) {
		root, creds := fakeProc(t, filepath.Join(t.TempDir(), "gone"))
		var logs bytes.Buffer
		a := New(fakeLookups(Config{ProcRoot: root, Logger: slog.New(slog.NewTextHandler(&logs, nil))}))
		got, err := a.Attest(t.Context(), creds)
		if err != nil {
			t.Fatalf("Attest() error: %v", err)
		}
		want := []attestation.Selector{
			sel("gid", "1000"), sel("group", "apps"),
			sel("supplementary_gid", "1000"), sel("supplementary_gid", "27"),
			sel("uid", "1000"), sel("user", "app"),
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Attest() mismatch (-want +got):\n%s", diff)
		}
		if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "pid=4242") {
			t.Errorf("log = %q, want a warning naming pid 4242", logs.String())
		}
	})
	t.Run("a readable executable gives path and sha256 and is hashed again only when it changes", func(t *testing.T) {
		bin := filepath.Join(t.TempDir(), "app")
		if err := os.WriteFile(bin, []byte("version 1"), 0o755); err != nil {
			t.Fatal(err)
		}
		root, creds := fakeProc(t, bin)
		a := New(fakeLookups(Config{ProcRoot: root}))
		for range 3 {
			got, err := a.Attest(t.Context(), creds)
			if err != nil {
				t.Fatalf("Attest() error: %v", err)
			}
			want := []attestation.Selector{sel("path", bin), sel("sha256", fileSHA256(t, bin))}
			if diff := cmp.Diff(want, byKey(got, "path", "sha256")); diff != "" {
				t.Errorf("Attest() mismatch (-want +got):\n%s", diff)
			}
		}
		if got := a.hashed.Load(); got != 1 {
			t.Errorf("hashed %d times, want 1", got)
		}
		if err := os.WriteFile(bin, []byte("version 2, longer"), 0o755); err != nil {
			t.Fatal(err)
		}
		got, err := a.Attest(t.Context(), creds)
		if err != nil {
			t.Fatalf("Attest() error: %v", err)
		}
		if diff := cmp.Diff([]attestation.Selector{sel("sha256", fileSHA256(t, bin))}, byKey(got, "sha256")); diff != "" {
			t.Errorf("Attest() after the file changed mismatch (-want +got):\n%s", diff)
		}
		if got := a.hashed.Load(); got != 2 {
			t.Errorf("hashed %d times, want 2", got)
		}
	})
	t.Run("a missing process directory is a changed process", func(t *testing.T) {
		_, err := New(Config{ProcRoot: t.TempDir()}).Attest(t.Context(), peer.Credentials{PID: 4242, StartTime: 1})
		if !errors.Is(err, ErrProcessChanged) {
			t.Fatalf("Attest() error = %v, want ErrProcessChanged", err)
		}
	})
	t.Run("a status file that does not parse is an error, and no selectors", func(t *testing.T) {
		root, creds := fakeProc(t, os.Args[0])
		if err := os.WriteFile(filepath.Join(root, "4242", "status"), []byte("Name:\tfake\nGroups:\tnot-a-number\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := New(Config{ProcRoot: root}).Attest(t.Context(), creds)
		if err == nil || errors.Is(err, ErrProcessChanged) || got != nil {
			t.Fatalf("Attest() = %v, %v; want a parse error that is not ErrProcessChanged", got, err)
		}
	})
	t.Run("a status file that does not parse from a process that changed is a changed process", func(t *testing.T) {
		root, creds := fakeProc(t, os.Args[0])
		if err := os.WriteFile(filepath.Join(root, "4242", "status"), []byte("garbage"), 0o644); err != nil {
			t.Fatal(err)
		}
		creds.StartTime++ // the pid now belongs to a process started later
		got, err := New(Config{ProcRoot: root}).Attest(t.Context(), creds)
		if !errors.Is(err, ErrProcessChanged) || got != nil {
			t.Fatalf("Attest() = %v, %v; want ErrProcessChanged", got, err)
		}
	})
	t.Run("a cancelled context returns no selectors", func(t *testing.T) {
		root, creds := fakeProc(t, os.Args[0])
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := New(Config{ProcRoot: root}).Attest(ctx, creds); !errors.Is(err, context.Canceled) {
			t.Fatalf("Attest() error = %v, want context.Canceled", err)
		}
	})
}

func TestHashCacheIsBounded(t *testing.T) {
	c := hashCache{max: 4}
	for i := range 10 {
		c.put(exeKey{path: strconv.Itoa(i)}, "x")
	}
	if got := c.len(); got != 4 {
		t.Errorf("cache holds %d entries, want 4", got)
	}
	if _, ok := c.get(exeKey{path: "9"}); !ok {
		t.Errorf("the newest entry was evicted")
	}
}

func BenchmarkAttestOwnProcess(b *testing.B) {
	a := New(Config{})
	creds := selfCredentials(b)
	for b.Loop() {
		if _, err := a.Attest(b.Context(), creds); err != nil {
			b.Fatal(err)
		}
	}
}

// unix:path is given only when the path, looked up by the agent, is the file the process runs: not for a
// deleted (or replaced, or bind-mounted) executable. unix:sha256, read from the running file, still is.
func TestThePathSelectorNamesTheRunningFileOrIsLeftOut(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	bin := filepath.Join(t.TempDir(), "app")
	testutil.CopyExecutable(t, sleep, bin)
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), bin, "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	creds := processCredentials(t, cmd.Process.Pid)
	creds.UID, creds.GID = uint32(os.Getuid()), uint32(os.Getgid())
	sum := fileSHA256(t, bin)

	got, err := New(Config{}).Attest(t.Context(), creds)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]attestation.Selector{sel("path", bin), sel("sha256", sum)}, byKey(got, "path", "sha256")); diff != "" {
		t.Errorf("running from its path (-want +got):\n%s", diff)
	}

	if err := os.Remove(bin); err != nil {
		t.Fatal(err)
	}
	got, err = New(Config{}).Attest(t.Context(), creds)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]attestation.Selector{sel("sha256", sum)}, byKey(got, "path", "sha256")); diff != "" {
		t.Errorf("deleted (-want +got):\n%s", diff)
	}
}

// An executable larger than the agent hashes gets no unix:sha256 (a process cannot make the agent read
// gigabytes per connection); connections attesting the same new file at once read it once.
func TestHashingIsBounded(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	start := func(t *testing.T, size int64) (string, peer.Credentials) {
		t.Helper()
		bin := filepath.Join(t.TempDir(), "app")
		testutil.CopyExecutable(t, sleep, bin)
		if size > 0 {
			if err := os.Truncate(bin, size); err != nil { // sparse: the file still runs
				t.Fatal(err)
			}
		}
		if err := os.Chmod(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(t.Context(), bin, "30")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return bin, processCredentials(t, cmd.Process.Pid)
	}
	t.Run("a file over the limit is not hashed", func(t *testing.T) {
		bin, creds := start(t, maxHashSize+1)
		a := New(Config{})
		got, err := a.Attest(t.Context(), creds)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]attestation.Selector{sel("path", bin)}, byKey(got, "path", "sha256")); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
		if n := a.hashed.Load(); n != 0 {
			t.Errorf("hashed %d files, want 0", n)
		}
	})
	t.Run("concurrent attestations read a new file once", func(t *testing.T) {
		bin, creds := start(t, 0)
		a := New(Config{})
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				got, err := a.Attest(t.Context(), creds)
				if err != nil {
					t.Error(err)
					return
				}
				if diff := cmp.Diff([]attestation.Selector{sel("path", bin), sel("sha256", fileSHA256(t, bin))}, byKey(got, "path", "sha256")); diff != "" {
					t.Errorf("(-want +got):\n%s", diff)
				}
			})
		}
		wg.Wait()
		if n := a.hashed.Load(); n != 1 {
			t.Errorf("hashed %d times, want 1", n)
		}
	})
}

// A read, once started, finishes for the connections waiting on it even when the one that started it has
// gone away; a uid gets one new file read at a time.
func TestHashReadsAreSharedAndRationed(t *testing.T) {
	t.Run("the first caller's cancellation does not fail the read", func(t *testing.T) {
		bin := filepath.Join(t.TempDir(), "app")
		if err := os.WriteFile(bin, []byte("some program"), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		sum, err := New(Config{}).hash(ctx, exeKey{path: bin, ino: 1}, f, 1000)
		if err != nil || sum != fileSHA256(t, bin) {
			t.Errorf("hash = %q, %v; want the file's hash", sum, err)
		}
	})
	t.Run("one file per uid at a time; others wait for the same file", func(t *testing.T) {
		var f inflight
		k1, k2 := exeKey{path: "a", ino: 1}, exeKey{path: "b", ino: 2}
		c, first, err := f.join(k1, 1000)
		if err != nil || !first {
			t.Fatalf("first join = %v, %v", first, err)
		}
		if w, first, err := f.join(k1, 1001); err != nil || first || w != c {
			t.Errorf("another uid asking for the same file should wait for it: %v, %v", first, err)
		}
		if _, _, err := f.join(k2, 1000); err == nil || !strings.Contains(err.Error(), "uid 1000") {
			t.Errorf("a second new file for uid 1000 = %v, want refused", err)
		}
		if _, first, err := f.join(k2, 1001); err != nil || !first {
			t.Errorf("another uid's new file = %v, %v; want read", first, err)
		}
		f.finish(k1, c, 1000)
		select {
		case <-c.done:
		default:
			t.Error("finish did not release the waiters")
		}
		if _, first, err := f.join(k2, 1000); err != nil || first {
			t.Errorf("after finishing, uid 1000 waits for b like everyone: %v, %v", first, err)
		}
	})
}
