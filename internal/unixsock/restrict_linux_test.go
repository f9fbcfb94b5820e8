package unixsock

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kithid/kith/internal/testutil"
)

// pingEnv makes the test binary a client: it connects to the socket named in the variable, writes
// "ping\n" and exits 0 if "pong\n" comes back, 3 if the connection is closed first.
const pingEnv = "KITH_UNIXSOCK_TEST_PING"

func TestMain(m *testing.M) {
	if path := os.Getenv(pingEnv); path != "" {
		os.Exit(ping(path))
	}
	os.Exit(m.Run())
}

func ping(path string) int {
	c, err := net.Dial("unix", path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		return 2
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return 3
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "pong\n" {
		return 3
	}
	return 0
}

// pongServer answers "pong\n" to every line on l until l is closed.
func pongServer(t *testing.T, l net.Listener) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
					c.Write([]byte("pong\n"))
				}
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
}

func TestRestrictRefusesPeersNotAllowed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to connect under another uid")
	}
	const nobody = 65534
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "client")
	testutil.CopyExecutable(t, os.Args[0], bin)

	tests := []struct {
		name        string
		allow       Allow
		uid         uint32
		wantExit    int
		wantRefused int64
	}{
		{name: "an allowed uid gets through", allow: Allow{UIDs: []uint32{0, nobody}}, uid: nobody, wantExit: 0},
		{name: "an allowed gid gets through", allow: Allow{UIDs: []uint32{0}, GIDs: []uint32{nobody}}, uid: nobody, wantExit: 0},
		{name: "another uid is refused although the socket is 0777", allow: Allow{UIDs: []uint32{0}}, uid: nobody, wantExit: 3, wantRefused: 1},
		{name: "root is refused when not listed", allow: Allow{UIDs: []uint32{nobody}}, uid: 0, wantExit: 3, wantRefused: 1},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("s%d.sock", i))
			l, err := Listen(path, 0o777)
			if err != nil {
				t.Fatal(err)
			}
			var refused atomic.Int64
			var logs bytes.Buffer
			var logsMu sync.Mutex
			pongServer(t, Restrict(l, RestrictConfig{
				Name: "test socket", Allow: tt.allow, OnRefuse: func() { refused.Add(1) },
				Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &logsMu}, nil)),
			}))
			cmd := exec.CommandContext(t.Context(), bin, "-test.run=^$")
			cmd.Env = append(os.Environ(), pingEnv+"="+path)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: tt.uid, Gid: tt.uid}}
			out, err := cmd.CombinedOutput()
			got := 0
			if ee, ok := err.(*exec.ExitError); ok {
				got = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if got != tt.wantExit {
				t.Errorf("client as uid %d exited %d, want %d\n%s", tt.uid, got, tt.wantExit, out)
			}
			// The refusal is counted before the connection is closed, so it is visible once the client is done.
			if diff := cmp.Diff(tt.wantRefused, refused.Load()); diff != "" {
				t.Errorf("refused connections (-want +got):\n%s", diff)
			}
			logsMu.Lock()
			defer logsMu.Unlock()
			if logged := bytes.Contains(logs.Bytes(), []byte("test socket refused a connection")); logged != (tt.wantRefused > 0) {
				t.Errorf("refusal logged = %v, want %v:\n%s", logged, tt.wantRefused > 0, logs.String())
			}
		})
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func TestRestrictLogsAtMostOncePerInterval(t *testing.T) {
	dir := t.TempDir()
	l, err := Listen(filepath.Join(dir, "s.sock"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	clock := testutil.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	var logs bytes.Buffer
	var mu sync.Mutex
	var refused atomic.Int64
	r := Restrict(l, RestrictConfig{
		Allow: Allow{}, LogEvery: 10 * time.Second, Now: clock.Now, OnRefuse: func() { refused.Add(1) },
		Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, &slog.HandlerOptions{
			ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey || a.Key == "pid" {
					return slog.Attr{}
				}
				return a
			},
		})),
	})
	pongServer(t, r)
	for i := range 5 {
		if i == 3 {
			clock.Advance(10 * time.Second)
		}
		if code := ping(filepath.Join(dir, "s.sock")); code != 3 {
			t.Fatalf("ping %d: exit %d, want 3 (refused)", i, code)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	want := fmt.Sprintf(`level=WARN msg="unix socket refused a connection: uid and gid not allowed" uid=%[1]d gid=%[2]d allowed="uids [] gids []" not_logged_since_last=0
level=WARN msg="unix socket refused a connection: uid and gid not allowed" uid=%[1]d gid=%[2]d allowed="uids [] gids []" not_logged_since_last=2
`, os.Getuid(), os.Getgid())
	if diff := cmp.Diff(want, logs.String()); diff != "" {
		t.Errorf("logs (-want +got):\n%s", diff)
	}
	if got := refused.Load(); got != 5 {
		t.Errorf("refused = %d, want 5", got)
	}
}
