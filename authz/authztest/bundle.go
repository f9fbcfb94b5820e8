// Package authztest has test helpers for signed policy bundles: rewriting a bundle's files after it was
// signed, as an attacker on the way between server and agent would.
package authztest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"
)

// RewriteBundle unpacks a bundle tarball, lets change edit its files (by tar path) and packs them again,
// in name order. The signature file is kept as it was unless change edits it.
func RewriteBundle(t testing.TB, b []byte, change func(files map[string][]byte)) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("rewrite bundle: %v", err)
	}
	tr := tar.NewReader(zr)
	files := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("rewrite bundle: %v", err)
		}
		if files[h.Name], err = io.ReadAll(tr); err != nil {
			t.Fatalf("rewrite bundle: %s: %v", h.Name, err)
		}
	}
	change(files)
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		data := files[name]
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatalf("rewrite bundle: %v", err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatalf("rewrite bundle: %v", err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("rewrite bundle: %v", err)
	}
	if err := zw.Close(); err != nil {
		t.Fatalf("rewrite bundle: %v", err)
	}
	return out.Bytes()
}

// TamperBundle replaces old with new in every file of a bundle tarball but its signatures.
func TamperBundle(t testing.TB, b []byte, old, new string) []byte {
	t.Helper()
	return RewriteBundle(t, b, func(files map[string][]byte) {
		for name, data := range files {
			if !strings.HasSuffix(name, ".signatures.json") {
				files[name] = bytes.ReplaceAll(data, []byte(old), []byte(new))
			}
		}
	})
}
