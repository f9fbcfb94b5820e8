package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kithid/kith/ca"
)

func TestResolveServerName(t *testing.T) {
	dir := t.TempDir()
	if got, chosen, err := resolveServerName("kith-0", dir); err != nil || got != "kith-0" || chosen {
		t.Errorf("configured: %q, %v, %v; want kith-0 as configured", got, chosen, err)
	}
	first, chosen, err := resolveServerName("", dir)
	if err != nil || !chosen || !ca.ValidServerName(first) {
		t.Fatalf("first start: %q, %v, %v; want a new valid name", first, chosen, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, serverNameFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("name file: %v, %v; want it 0600", fi, err)
	}
	again, chosen, err := resolveServerName("", dir)
	if err != nil || chosen || again != first {
		t.Errorf("restart: %q, %v, %v; want the same name %q kept", again, chosen, err, first)
	}
	other, _, err := resolveServerName("", t.TempDir())
	if err != nil || other == first {
		t.Errorf("another data dir on this host: %q, %v; want a name other than %q", other, err, first)
	}
	if err := os.WriteFile(filepath.Join(dir, serverNameFile), []byte("a/b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := resolveServerName("", dir); err == nil || !strings.Contains(err.Error(), "not a server name") {
		t.Errorf("a damaged name file: %v, want an error saying what to do", err)
	}
}
