package sqlite

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A database whose pages were overwritten is refused at open, saying to restore it, instead of starting
// and failing reads later.
func TestACorruptedDatabaseIsRefusedAtOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kith.db")
	s := openAt(t, path)
	for i := range 300 {
		if _, err := s.CreateEntry(context.Background(), "test", testEntry(t, i)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	if fi.Size() < 8*4096 {
		t.Fatalf("database is only %d bytes", fi.Size())
	}
	junk := []byte(strings.Repeat("\\xde\\xad\\xbe\\xef", 1024))
	for _, page := range []int64{3, 5, 7} { // past the header and schema pages: table and index pages
		if _, err := f.WriteAt(junk, page*4096); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	_, err = Open(context.Background(), Config{Path: path})
	if err == nil || !strings.Contains(err.Error(), "restore it from a backup") {
		t.Fatalf("Open of a corrupted database = %v, want a refusal that says to restore", err)
	}
}

// Pages overwritten under a running store: reads through Probe fail and Check reports the damage, so
// that /readyz and `kith store check` see what quick_check at open would have refused.
func TestCorruptionUnderAnOpenStoreIsSeenByProbeAndCheck(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "kith.db")
	s := openAt(t, path)
	for i := range 300 {
		if _, err := s.CreateEntry(ctx, "test", testEntry(t, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Probe(ctx); err != nil {
		t.Fatalf("Probe of a healthy store = %v", err)
	}
	// Fold the WAL into the file so that the overwritten pages are the ones read.
	if _, err := s.writer.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	junk := []byte(strings.Repeat("\xde\xad\xbe\xef", 1024))
	for page := int64(2); page*4096 < fi.Size(); page++ {
		if _, err := f.WriteAt(junk, page*4096); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	if err := s.Probe(ctx); err == nil {
		t.Error("Probe of a store whose pages were overwritten = nil, want a read error")
	}
	check, problems, err := s.Check(ctx)
	if err != nil || len(problems) == 0 {
		t.Errorf("Check = %q %v %v, want problems found", check, problems, err)
	}
}
