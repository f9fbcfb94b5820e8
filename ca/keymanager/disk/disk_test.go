package disk_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kithid/kith/ca/keymanager/disk"
)

func TestGenerateKeyWritesAPrivateFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	m, err := disk.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	key, err := m.GenerateKey(ctx, "x509-root-abc")
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	if pub, ok := key.Public().(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("key is %T, want ECDSA P-256", key.Public())
	}
	for path, want := range map[string]fs.FileMode{dir: 0o700 | fs.ModeDir, filepath.Join(dir, "x509-root-abc.pem"): 0o600} {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode() != want {
			t.Errorf("%s has mode %s, want %s", path, info.Mode(), want)
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "x509-root-abc.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if block, _ := pem.Decode(data); block == nil || block.Type != "PRIVATE KEY" {
		t.Errorf("key file is not a PKCS#8 PEM block")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d files, want just the key (no temporary files left)", len(entries))
	}

	// A new manager on the same directory loads the same key.
	m2, err := disk.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := m2.GetKey(ctx, "x509-root-abc")
	if err != nil {
		t.Fatalf("GetKey: %v", err)
	}
	if !got.Public().(*ecdsa.PublicKey).Equal(key.Public()) {
		t.Error("reloaded key differs")
	}
	if _, err := m2.GenerateKey(ctx, "x509-root-abc"); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("GenerateKey on an existing id: got %v, want an already-exists error", err)
	}

	if err := m2.DeleteKey(ctx, "x509-root-abc"); err != nil {
		t.Fatalf("DeleteKey: %v", err)
	}
	if err := m2.DeleteKey(ctx, "x509-root-abc"); err != nil {
		t.Errorf("DeleteKey of a missing key: %v", err)
	}
	if _, err := m2.GetKey(ctx, "x509-root-abc"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("GetKey after delete: got %v, want fs.ErrNotExist", err)
	}
}

func TestRejectsUnsafeKeyIDs(t *testing.T) {
	m, err := disk.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "..", "../escape", "a/b", `a\b`, ".hidden", "a..b"} {
		t.Run("rejects "+id, func(t *testing.T) {
			if _, err := m.GenerateKey(context.Background(), id); err == nil {
				t.Errorf("GenerateKey(%q) succeeded", id)
			}
			if _, err := m.GetKey(context.Background(), id); err == nil {
				t.Errorf("GetKey(%q) succeeded", id)
			}
		})
	}
}
