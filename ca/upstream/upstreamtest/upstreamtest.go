// Package upstreamtest starts real upstream authorities for the tests tagged upstream: a step-ca
// initialised by the test, and a Vault dev server. The binaries come from scripts/components/stepca.sh and
// scripts/components/vault.sh, which build them once from the Go module proxy into a cache outside the
// repository ($KITH_TEST_CACHE, default $HOME/.cache/kith-test); `make test-upstream` runs the scripts
// first. Without a binary the test fails and says how to get it: it is never skipped.
package upstreamtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The versions the scripts build; TestVersionsMatchScripts keeps them in step.
const (
	StepVersion  = "v0.30.2"
	VaultVersion = "v1.21.4"
)

// cacheDir is $KITH_TEST_CACHE, default $HOME/.cache/kith-test.
func cacheDir(t testing.TB) string {
	if c := os.Getenv("KITH_TEST_CACHE"); c != "" {
		return c
	}
	home, err := os.UserHomeDir()
	if err != nil {
		t.Fatalf("find the test cache: %v (set KITH_TEST_CACHE)", err)
	}
	return filepath.Join(home, ".cache", "kith-test")
}

// binary returns the path of a cached component binary, failing the test with how to build it.
func binary(t testing.TB, dir, name, script, what string) string {
	t.Helper()
	p := filepath.Join(cacheDir(t), dir, name)
	if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("%s is not in %s: run %s once (it builds %s from the Go module proxy into that cache; %s), or run make test-upstream, which does",
			name, filepath.Dir(p), script, name, what)
	}
	return p
}

// FreePort returns a TCP port on 127.0.0.1 nothing listens on now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// process is a server binary the test starts, stops and restarts with the same arguments.
type process struct {
	t    testing.TB
	name string
	bin  string
	args []string
	env  []string
	log  string
	// ready reports whether the server answers.
	ready func(ctx context.Context) error

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Start starts the server and waits until it is ready (at most 30 s).
func (p *process) Start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		p.t.Fatalf("%s is already running", p.name)
	}
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	p.cmd = cmd
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if err = p.ready(ctx); err == nil {
			return
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(p.log)
			p.cmd = nil
			p.t.Fatalf("%s exited before it was ready: %v\n%s", p.name, err, log)
		case <-ctx.Done():
			log, _ := os.ReadFile(p.log)
			p.t.Fatalf("%s not ready after 30s: %v\n%s", p.name, err, log)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop kills the server (SIGKILL: as abrupt as a crash or a network cut) and waits for it to exit.
func (p *process) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	for i := 0; i < 100; i++ {
		if err := syscall.Kill(p.cmd.Process.Pid, 0); errors.Is(err, syscall.ESRCH) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.cmd = nil
}

// Log returns what the server wrote so far.
func (p *process) Log() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

func httpReady(client *http.Client, url string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
