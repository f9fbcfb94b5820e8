//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/internal/testutil"
)

// adminLoopEnv makes the test binary call GetServerInfo on the admin socket named by the variable, on a
// new connection each time, as fast as it can, until the file <socket dir>/../stop exists; it prints
// "attempts=N through=M" every 10 attempts and at the end, and exits 0.
const adminLoopEnv = "KITH_E2E_ADMIN_LOOP"

func init() { helperModes[adminLoopEnv] = adminLoop }

func adminLoop(socket string) int {
	stop := filepath.Join(filepath.Dir(filepath.Dir(socket)), "stop")
	attempts, through := 0, 0
	for {
		if _, err := os.Stat(stop); err == nil {
			break
		}
		if _, err := os.Stat(socket); err != nil {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		attempts++
		conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			fmt.Fprintln(os.Stderr, "client:", err)
			return 2
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if _, err := adminv1.NewAdminServiceClient(conn).GetServerInfo(ctx, &adminv1.GetServerInfoRequest{}); err == nil {
			through++
		}
		cancel()
		conn.Close()
		if attempts%10 == 0 {
			fmt.Printf("attempts=%d through=%d\n", attempts, through)
		}
	}
	fmt.Printf("attempts=%d through=%d\n", attempts, through)
	return 0
}

// The admin socket sits in a world-writable sticky directory and the server runs with umask 000; another
// uid connects in a loop from before the socket exists until after it was (wrongly) made 0777. No call
// may get through: the socket is never reachable with a wider mode, and the peer's uid is checked on every
// connection whatever the mode.
func TestAttackAdminSocketFromAnotherUID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to connect as another uid")
	}
	const nobody = 65534
	dir := shortTempDir(t)
	public := filepath.Join(dir, "pub")
	if err := os.Mkdir(public, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(public, 0o1777); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(public, "admin.sock")

	loop := helperProcess(t, dir, adminLoopEnv, socket, nobody)
	var loopOut testutil.Buffer
	loop.Stdout, loop.Stderr = &loopOut, &loopOut
	if err := loop.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { loop.Process.Kill(); loop.Wait() })

	httpAddr := freeAddr(t)
	srv := startUmask(t, "server", 0, []string{"KITH_LISTEN_GRPC=" + freeAddr(t), "KITH_LISTEN_HTTP=" + httpAddr,
		"KITH_LISTEN_ADMIN_SOCKET=" + socket},
		"server", "--data-dir", filepath.Join(dir, "server"), "--trust-domain", "e2e.test")
	srv.waitOutput("kith server started", 20*time.Second)
	mustKith(t, socket, "ca", "show") // the server's own uid gets through

	// An operator's mistake, or a tool that "fixes" permissions: the mode alone must not let anyone in.
	if err := os.Chmod(socket, 0o777); err != nil {
		t.Fatal(err)
	}
	progress := func() (attempts, through int) {
		lines := strings.Split(strings.TrimSpace(loopOut.String()), "\n")
		fmt.Sscanf(lines[len(lines)-1], "attempts=%d through=%d", &attempts, &through)
		return attempts, through
	}
	atChmod, _ := progress()
	eventually(t, 20*time.Second, "50 more connections after chmod 0777", func() error {
		if n, _ := progress(); n < atChmod+50 {
			return fmt.Errorf("%d connections, want at least %d", n, atChmod+50)
		}
		return nil
	})
	if err := os.WriteFile(filepath.Join(dir, "stop"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := loop.Wait(); err != nil {
		t.Fatalf("loop as uid %d: %v\n%s", nobody, err, loopOut.String())
	}
	attempts, through := progress()
	t.Logf("uid %d: %d connections, %d calls through", nobody, attempts, through)
	if through != 0 {
		t.Errorf("uid %d made %d calls of which %d got through, want none through", nobody, attempts, through)
	}

	refused := func() (int, error) {
		resp, err := http.Get("http://" + httpAddr + "/metrics")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return 0, err
		}
		m := regexp.MustCompile(`(?m)^kith_admin_socket_refused_total (\d+)`).FindSubmatch(body)
		if m == nil {
			return 0, errors.New("no kith_admin_socket_refused_total in /metrics")
		}
		return strconv.Atoi(string(m[1]))
	}
	if n, err := refused(); err != nil || n < 50 {
		t.Errorf("kith_admin_socket_refused_total = %d (%v), want at least 50", n, err)
	}
	srv.waitOutput("admin socket refused a connection", 5*time.Second)
}
