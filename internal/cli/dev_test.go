package cli

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kithid/kith/internal/testutil"
)

// devRun is a kith dev running in-process on a data dir.
type devRun struct {
	cancel         context.CancelFunc
	done           chan int
	stdout, stderr testutil.Buffer
}

// runDevOn starts kith dev on dir and waits until it says it is running; it fails the test if dev exits
// first.
func runDevOn(t *testing.T, dir string) *devRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &devRun{cancel: cancel, done: make(chan int, 1)}
	go func() {
		d.done <- MainEnv(ctx, []string{"dev", "--data-dir", dir, "--http", "127.0.0.1:0"}, &d.stdout, &d.stderr, func(string) string { return "" })
	}()
	t.Cleanup(d.stop)
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(d.stdout.String(), "Press Ctrl-C to stop."); time.Sleep(20 * time.Millisecond) {
		select {
		case code := <-d.done:
			d.done <- code
			t.Fatalf("kith dev exited %d before it was running:\n%s", code, d.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("kith dev is not running after 20s:\n%s", d.stderr.String())
		}
	}
	return d
}

// stop ends kith dev as Ctrl-C does and waits for it; it may be called more than once.
func (d *devRun) stop() {
	d.cancel()
	code := <-d.done
	d.done <- code
}

// kith dev on a data dir whose agent state is damaged or gone starts again: the dev agent joins again
// (it has no --join-token to be told about), and a corrupt file is kept aside, not deleted.
func TestDevStartsAgainWhenItsAgentStateIsDamaged(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(path string) error
		aside  bool   // the file is moved aside as state.json.corrupt-<time>
		was    string // what it held
	}{
		{"a state file that is not JSON is moved aside", func(p string) error { return os.WriteFile(p, []byte("garbage"), 0o600) }, true, "garbage"},
		{"an empty state file is moved aside", func(p string) error { return os.WriteFile(p, nil, 0o600) }, true, ""},
		{"a deleted state file", os.Remove, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			runDevOn(t, dir).stop()
			state := filepath.Join(dir, "agent", "state.json")
			if err := tc.damage(state); err != nil {
				t.Fatal(err)
			}

			d := runDevOn(t, dir)
			env := &devEnv{dir: dir, vars: map[string]string{"SPIFFE_ENDPOINT_SOCKET": "unix://" + filepath.Join(dir, "agent.sock")}}
			if out, errs, code := env.kith("agent", "healthcheck"); code != 0 {
				t.Errorf("agent healthcheck after the restart = %d %q %q", code, out, errs)
			}
			if !strings.Contains(d.stderr.String(), "joining again") {
				t.Errorf("kith dev did not log that the dev agent joins again:\n%s", d.stderr.String())
			}
			aside, _ := filepath.Glob(state + ".corrupt-*")
			switch {
			case !tc.aside && len(aside) != 0:
				t.Errorf("moved aside %v, though there was no file", aside)
			case tc.aside && len(aside) != 1:
				t.Errorf("corrupt state moved aside to %v, want one %s.corrupt-<time>", aside, state)
			case tc.aside:
				if b, err := os.ReadFile(aside[0]); err != nil || string(b) != tc.was {
					t.Errorf("%s holds %q (%v), want the corrupt file's %q", aside[0], b, err, tc.was)
				}
				if !strings.Contains(d.stderr.String(), aside[0]) {
					t.Errorf("the log does not name %s:\n%s", aside[0], d.stderr.String())
				}
			}
		})
	}
}

// devAgentMustJoin decides from the agent state whether the dev agent joins with a new token: also when the
// SVID in a readable state has expired (the agent would otherwise ask for --join-token).
func TestDevAgentMustJoin(t *testing.T) {
	dir := t.TempDir()
	runDevOn(t, dir).stop()
	agentDir := filepath.Join(dir, "agent")
	now := time.Now()
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		name string
		dir  string
		now  time.Time
		want bool
	}{
		{"a state with a valid agent svid is restored", agentDir, now, false},
		{"a state whose agent svid has expired joins again", agentDir, now.Add(2 * time.Hour), true},
		{"no state joins", t.TempDir(), now, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := devAgentMustJoin(tc.dir, tc.now, log)
			if err != nil || got != tc.want {
				t.Errorf("devAgentMustJoin = %v, %v; want %v, nil", got, err, tc.want)
			}
		})
	}
}
