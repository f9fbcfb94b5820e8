package unix

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/kithid/kith/attestation/peer"
)

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

// serve starts a gRPC health server with TransportCredentials on a socket in dir.
func serve(t testing.TB, dir string, opts ...grpc.ServerOption) string {
	t.Helper()
	socket := filepath.Join(dir, "agent.sock")
	lis, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(append([]grpc.ServerOption{grpc.Creds(peer.TransportCredentials())}, opts...)...)
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

// BenchmarkConnectAttestFetch measures what a workload pays per connection: connect, handshake
// (SO_PEERCRED and start time), attest in the handler (hash cached) and one unary call.
func BenchmarkConnectAttestFetch(b *testing.B) {
	a := New(Config{})
	attest := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		c, ok := peer.FromContext(ctx)
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
	creds, err := peer.PeerCredentials(conn.(*net.UnixConn))
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
