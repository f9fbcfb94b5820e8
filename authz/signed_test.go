package authz_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kithid/kith/authz"
)

func TestSignedBundle(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, err := authz.MarshalPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	modules := map[string]string{"ext/deny.rego": "package kith.ext\n\ndeny contains \"no\" if input.request.method == \"DELETE\"\n"}
	b, err := authz.BuildSignedBundle("abc123", modules, key)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("a signed bundle verifies and round-trips", func(t *testing.T) {
		rev, got, err := authz.ReadSignedBundle(b, pub)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(modules, got); diff != "" || rev != "abc123" {
			t.Errorf("rev %q, modules (-want +got):\n%s", rev, diff)
		}
	})
	t.Run("another key is refused", func(t *testing.T) {
		other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		otherPub, _ := authz.MarshalPublicKey(&other.PublicKey)
		if _, _, err := authz.ReadSignedBundle(b, otherPub); err == nil {
			t.Error("bundle verified with the wrong key")
		}
	})
	t.Run("a tampered bundle is refused", func(t *testing.T) {
		tampered := TamperBundle(t, b, "DELETE", "GET")
		if _, _, err := authz.ReadSignedBundle(tampered, pub); err == nil {
			t.Error("tampered bundle verified")
		}
	})
	t.Run("an unsigned bundle is refused", func(t *testing.T) {
		unsigned, _ := authz.BuildBundle("abc123", modules)
		if _, _, err := authz.ReadSignedBundle(unsigned, pub); err == nil {
			t.Error("unsigned bundle verified")
		}
	})
}

// TamperBundle rewrites every file of a bundle tarball, replacing old with new in its contents.
func TamperBundle(t *testing.T, b []byte, old, new string) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		if !strings.HasSuffix(h.Name, ".signatures.json") {
			data = []byte(strings.ReplaceAll(string(data), old, new))
		}
		h.Size = int64(len(data))
		tw.WriteHeader(h)
		tw.Write(data)
	}
	tw.Close()
	zw.Close()
	return out.Bytes()
}
