package kithenv

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadMemory(t *testing.T) {
	t.Run("this process has a resident set no larger than its peak", func(t *testing.T) {
		m, err := ReadMemory(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if m.RSS <= 0 || m.Peak < m.RSS {
			t.Errorf("ReadMemory = %+v, want 0 < RSS <= Peak", m)
		}
	})
	t.Run("a process that does not exist is an error", func(t *testing.T) {
		if _, err := ReadMemory(1 << 30); err == nil {
			t.Error("ReadMemory of a missing pid succeeded")
		}
	})
}

func TestMiB(t *testing.T) {
	if got := MiB(3 << 19); got != "1.5 MiB" {
		t.Errorf("MiB(1.5 MiB) = %q", got)
	}
}

func TestAuthzSocketIsNextToTheAgentSocket(t *testing.T) {
	p := &Processes{AgentSocket: filepath.Join("/run", "kith-bench", "agent.sock")}
	if got, want := p.AuthzSocket(), filepath.Join("/run", "kith-bench", "authz.sock"); got != want {
		t.Errorf("AuthzSocket = %q, want %q", got, want)
	}
}
