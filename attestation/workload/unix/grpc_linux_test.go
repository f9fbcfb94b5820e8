package unix

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// dialEnv makes the test binary act as a Workload API client: it dials the socket named in the
// variable, makes one health check and exits. Tests use it to connect from another uid.
const dialEnv = "KITH_UNIX_TEST_DIAL"

// execEnv makes the test binary connect to the socket named in the variable and then execute sleep,
// keeping the connection: the attack of a process that connects as itself and is attested as another
// program.
const execEnv = "KITH_UNIX_TEST_CONNECT_THEN_EXEC"

func TestMain(m *testing.M) {
	if path := os.Getenv(execEnv); path != "" {
		c, err := net.Dial("unix", path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "connect:", err)
			os.Exit(1)
		}
		f, err := c.(*net.UnixConn).File() // a dup without close-on-exec: sleep keeps the connection
		if err != nil {
			fmt.Fprintln(os.Stderr, "connect:", err)
			os.Exit(1)
		}
		_ = f
		sleep, err := exec.LookPath("sleep")
		if err == nil {
			err = syscall.Exec(sleep, []string{"sleep", "30"}, os.Environ())
		}
		fmt.Fprintln(os.Stderr, "exec sleep:", err)
		os.Exit(1)
	}
	if path := os.Getenv(dialEnv); path != "" {
		if err := healthCheck(context.Background(), path); err != nil {
			fmt.Fprintln(os.Stderr, "client:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
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
	copyFile(t, os.Args[0], bin)

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

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkConnectAttestFetch measures what a workload pays per connection: connect, handshake
// (SO_PEERCRED and start time), attest in the handler (hash cached) and one unary call.
func BenchmarkConnectAttestFetch(b *testing.B) {
	a := New(Config{})
	attest := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		c, ok := FromContext(ctx)
		if !ok {
			return nil, errors.New("no unix peer credentials")
		}
		if _, err := a.Attest(ctx, c); err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
	socket := serve(b, b.TempDir(), grpc.UnaryInterceptor(attest))
	for b.Loop() {
		if err := healthCheck(b.Context(), socket); err != nil {
			b.Fatal(err)
		}
	}
}

// A process that connects and then executes another program keeps its pid and start time; it is refused,
// not attested as the program it now runs.
func TestAProcessThatExecutesAfterConnectingIsRefused(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	sock := filepath.Join(t.TempDir(), "s.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), execEnv+"="+sock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	conn, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	creds, err := PeerCredentials(conn.(*net.UnixConn))
	if err != nil {
		t.Fatalf("PeerCredentials: %v", err)
	}
	if creds.Exe != fileID(t, os.Args[0]) {
		t.Skip("the child executed sleep before the connection was read: the race this test needs was lost")
	}
	exe := filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "exe")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if target, _ := os.Readlink(exe); target == sleep || strings.HasSuffix(target, "/sleep") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the child never executed sleep")
		}
	}
	sels, err := New(Config{}).Attest(t.Context(), creds)
	if !errors.Is(err, ErrProcessChanged) || sels != nil {
		t.Fatalf("Attest() = %v, %v; want ErrProcessChanged", sels, err)
	}
}
