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
