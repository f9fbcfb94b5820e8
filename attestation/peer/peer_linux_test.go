package peer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	sysunix "golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/kithid/kith/attestation/procfs"

	"github.com/kithid/kith/internal/testutil"
)

// dialEnv makes the test binary act as a Workload API client: it dials the socket named in the
// variable, makes one health check and exits. Tests use it to connect from another uid.
const dialEnv = "KITH_UNIX_TEST_DIAL"

func TestMain(m *testing.M) {
	if path := os.Getenv(dialEnv); path != "" {
		if err := healthCheck(context.Background(), path); err != nil {
			fmt.Fprintln(os.Stderr, "client:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// selfCredentials returns the test process's credentials as PeerCredentials should see them.
func selfCredentials(t testing.TB) Credentials {
	t.Helper()
	pid := os.Getpid()
	start, err := procfs.StartTimeAt(sysunix.AT_FDCWD, filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		t.Fatalf("read start time of pid %d: %v", pid, err)
	}
	return Credentials{PID: int32(pid), UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), StartTime: start,
		Exe: fileID(t, filepath.Join("/proc", strconv.Itoa(pid), "exe"))}
}

// fileID is the device and inode of the file at path (following links).
func fileID(t testing.TB, path string) FileID {
	t.Helper()
	var st sysunix.Stat_t
	if err := sysunix.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return FileID{Dev: uint64(st.Dev), Ino: st.Ino} //nolint:unconvert // Dev's type differs across architectures.
}

func healthCheck(ctx context.Context, socket string) error {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// recorder is a gRPC interceptor that records the caller's credentials.
type recorder struct {
	mu    sync.Mutex
	creds []Credentials
}

func (r *recorder) intercept(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	c, ok := FromContext(ctx)
	if !ok {
		return nil, errors.New("no unix peer credentials")
	}
	r.mu.Lock()
	r.creds = append(r.creds, c)
	r.mu.Unlock()
	return h(ctx, req)
}

func (r *recorder) last() (Credentials, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.creds) == 0 {
		return Credentials{}, false
	}
	return r.creds[len(r.creds)-1], true
}

// serve starts a gRPC health server with TransportCredentials on a socket in dir.
func serve(t testing.TB, dir string, opts ...grpc.ServerOption) string {
	t.Helper()
	socket := filepath.Join(dir, "agent.sock")
	lis, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(append([]grpc.ServerOption{grpc.Creds(TransportCredentials())}, opts...)...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return socket
}

func TestTransportCredentialsOverGRPC(t *testing.T) {
	var rec recorder
	socket := serve(t, t.TempDir(), grpc.UnaryInterceptor(rec.intercept))
	if err := healthCheck(t.Context(), socket); err != nil {
		t.Fatalf("health check: %v", err)
	}
	got, ok := rec.last()
	if !ok {
		t.Fatal("the interceptor recorded no credentials")
	}
	want := selfCredentials(t)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("credentials mismatch (-want +got):\n%s", diff)
	}
}

func TestTransportCredentialsRefusesOtherConnections(t *testing.T) {
	t.Run("a connection that is not a unix socket is refused", func(t *testing.T) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		if _, _, err := TransportCredentials().ServerHandshake(a); err == nil {
			t.Fatal("ServerHandshake() of a pipe succeeded, want an error")
		}
	})
	t.Run("a client handshake is refused", func(t *testing.T) {
		if _, _, err := TransportCredentials().ClientHandshake(t.Context(), "x", nil); err == nil {
			t.Fatal("ClientHandshake() succeeded, want an error")
		}
	})
	t.Run("a context without peer has no credentials", func(t *testing.T) {
		if _, ok := FromContext(t.Context()); ok {
			t.Fatal("FromContext() reported credentials for a bare context")
		}
	})
}

func TestPeerCredentialsOfSocketPair(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "a")
	defer f.Close()
	defer syscall.Close(fds[1])
	c, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := PeerCredentials(c.(*net.UnixConn))
	if err != nil {
		t.Fatalf("PeerCredentials() error: %v", err)
	}
	if diff := cmp.Diff(selfCredentials(t), got); diff != "" {
		t.Errorf("PeerCredentials() mismatch (-want +got):\n%s", diff)
	}
}

func TestTransportCredentialsSeesAnotherUID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start a process under another uid")
	}
	const nobody = 65534
	dir := t.TempDir()
	// t.TempDir is <parent>/<n>, both 0700: open them up so that nobody can reach the socket and binary.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var rec recorder
	socket := serve(t, dir, grpc.UnaryInterceptor(rec.intercept))
	if err := os.Chmod(socket, 0o777); err != nil {
		t.Fatal(err)
	}
	// The test binary lives in a 0700 build directory; copy it where nobody can run it.
	bin := filepath.Join(dir, "client")
	testutil.CopyExecutable(t, os.Args[0], bin)

	cmd := exec.CommandContext(t.Context(), bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), dialEnv+"="+socket)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("client as uid %d: %v\n%s", nobody, err, out)
	}
	got, ok := rec.last()
	if !ok {
		t.Fatal("the interceptor recorded no credentials")
	}
	want := Credentials{PID: int32(cmd.Process.Pid), UID: nobody, GID: nobody, Exe: fileID(t, bin)}
	if diff := cmp.Diff(want, got, cmpIgnoreStartTime); diff != "" {
		t.Errorf("credentials mismatch (-want +got):\n%s", diff)
	}
}

var cmpIgnoreStartTime = cmp.Transformer("ignoreStartTime", func(c Credentials) Credentials {
	c.StartTime = 0
	return c
})
