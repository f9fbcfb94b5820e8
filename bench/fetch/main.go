// Command fetch measures a Workload API fetch on a fresh connection, what a short-lived workload does: the
// real `kith server` and `kith agent` run as child processes, and each call is one go-spiffe
// workloadapi.FetchX509Context (dial the agent socket, the agent attests this process, first X.509 context
// received and parsed, connection closed).
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/bench/internal/kithenv"
	"github.com/kithid/kith/bench/internal/latency"
)

func main() {
	bin := flag.String("kith", "bin/kith", "kith binary")
	calls := flag.Int("calls", 1000, "fetches to measure, one after another")
	warmup := flag.Int("warmup", 50, "fetches before measuring")
	cpuprofile := flag.String("cpuprofile", "", "run server and agent in this process and write a CPU profile of the measured calls here")
	stubServe := flag.String("stub-serve", "", "internal: serve the stub Workload API on this socket, replaying the response read from stdin")
	flag.Parse()
	if *stubServe != "" {
		if err := serveStub(*stubServe); err != nil {
			fmt.Fprintln(os.Stderr, "fetch stub:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*bin, *calls, *warmup, *cpuprofile); err != nil {
		fmt.Fprintln(os.Stderr, "fetch:", err)
		os.Exit(1)
	}
}

func run(bin string, calls, warmup int, cpuprofile string) error {
	ctx := context.Background()
	start := func() (*kithenv.Processes, error) { return kithenv.StartProcesses(ctx, kithenv.Options{Bin: bin}) }
	if cpuprofile != "" {
		start = func() (*kithenv.Processes, error) { return kithenv.StartInProcess(ctx) }
	}
	p, err := start()
	if err != nil {
		return err
	}
	defer p.Close()
	id := "spiffe://" + kithenv.TrustDomain + "/bench/fetch"
	if _, err := p.Admin.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: &adminv1.Entry{
		SpiffeId: id, ParentId: kithenv.AgentID.String(), Selectors: []string{"unix:uid:" + strconv.Itoa(os.Getuid())},
	}}); err != nil {
		return fmt.Errorf("create entry: %w", err)
	}
	addr := workloadapi.WithAddr("unix://" + p.AgentSocket)
	fetch := func() error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		x, err := workloadapi.FetchX509Context(ctx, addr)
		if err != nil {
			return err
		}
		if len(x.SVIDs) != 1 || x.SVIDs[0].ID.String() != id {
			return fmt.Errorf("fetched %d svids, want %s", len(x.SVIDs), id)
		}
		return nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for fetch() != nil { // until the agent holds the SVID
		if time.Now().After(deadline) {
			return fmt.Errorf("the entry never reached the workload: %w", fetch())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for range warmup {
		if err := fetch(); err != nil {
			return err
		}
	}
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	lat := make([]time.Duration, 0, calls)
	for range calls {
		start := time.Now()
		if err := fetch(); err != nil {
			return err
		}
		lat = append(lat, time.Since(start))
	}
	if cpuprofile != "" {
		pprof.StopCPUProfile()
		fmt.Println("fetch: server and agent ran in this process (-cpuprofile)")
	}
	fmt.Printf("fetch: go-spiffe FetchX509Context on a fresh connection (connect + attest + first X.509 context), %d calls: %s\n", calls, latency.Summarize(lat))

	// The floor: the same client against a stub server in this process that attests nothing and replays the
	// agent's response, so what is left is go-spiffe's dial, HTTP/2 setup and parsing.
	floor, err := stubFloor(ctx, p.AgentSocket, calls, warmup, false)
	if err != nil {
		return fmt.Errorf("floor: %w", err)
	}
	fmt.Printf("fetch: floor (same client, stub server in this process replaying the response, no attestation), %d calls: %s\n", calls, latency.Summarize(floor))
	floor, err = stubFloor(ctx, p.AgentSocket, calls, warmup, true)
	if err != nil {
		return fmt.Errorf("floor: %w", err)
	}
	fmt.Printf("fetch: floor (same client, stub server in another process replaying the response, no attestation), %d calls: %s\n", calls, latency.Summarize(floor))
	return nil
}

type stub struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	resp *workload.X509SVIDResponse
}

func (s *stub) FetchX509SVID(_ *workload.X509SVIDRequest, st grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	if err := st.Send(s.resp); err != nil {
		return err
	}
	<-st.Context().Done()
	return nil
}

// agentResponse is the agent's first X509SVIDResponse to this process, for the stubs to replay.
func agentResponse(ctx context.Context, agentSocket string) (*workload.X509SVIDResponse, error) {
	conn, err := grpc.NewClient("unix://"+agentSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true"))
	defer cancel()
	st, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(sctx, &workload.X509SVIDRequest{})
	if err != nil {
		return nil, err
	}
	return st.Recv()
}

// stubFloor measures the client against a stub server that replays the agent's response: in this process,
// or in a child process (this program with -stub-serve), so that the cost of waking another process is in
// the floor as it is for the agent.
func stubFloor(ctx context.Context, agentSocket string, calls, warmup int, child bool) ([]time.Duration, error) {
	resp, err := agentResponse(ctx, agentSocket)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kith-bench-stub-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "stub.sock")
	start := startStub
	if child {
		start = startStubProcess
	}
	stop, err := start(sock, resp)
	if err != nil {
		return nil, err
	}
	defer stop()
	return measure(ctx, sock, calls, warmup)
}

func startStub(sock string, resp *workload.X509SVIDResponse) (stop func(), err error) {
	lis, err := net.Listen("unix", sock)
	if err != nil {
		return nil, err
	}
	srv := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(srv, &stub{resp: resp})
	go srv.Serve(lis)
	return srv.Stop, nil
}

func startStubProcess(sock string, resp *workload.X509SVIDResponse) (stop func(), err error) {
	b, err := proto.Marshal(resp)
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-stub-serve", sock)
	cmd.Stdin, cmd.Stderr = bytes.NewReader(b), os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // gone with the bench, however it ends
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop = func() { _ = cmd.Process.Kill(); <-exited }
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			return stop, nil
		}
		select {
		case err := <-exited:
			return nil, fmt.Errorf("stub process exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("stub process did not listen on %s", sock)
		}
	}
}

// serveStub is the child of startStubProcess.
func serveStub(sock string) error {
	b, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	resp := new(workload.X509SVIDResponse)
	if err := proto.Unmarshal(b, resp); err != nil {
		return err
	}
	lis, err := net.Listen("unix", sock+".tmp")
	if err != nil {
		return err
	}
	if err := os.Rename(sock+".tmp", sock); err != nil {
		return err
	}
	srv := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(srv, &stub{resp: resp})
	return srv.Serve(lis)
}

// measure times calls fetches from the Workload API on sock after warmup unmeasured ones.
func measure(ctx context.Context, sock string, calls, warmup int) ([]time.Duration, error) {
	addr := workloadapi.WithAddr("unix://" + sock)
	lat := make([]time.Duration, 0, calls)
	for i := range warmup + calls {
		start := time.Now()
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := workloadapi.FetchX509Context(fctx, addr)
		cancel()
		if err != nil {
			return nil, err
		}
		if i >= warmup {
			lat = append(lat, time.Since(start))
		}
	}
	return lat, nil
}
