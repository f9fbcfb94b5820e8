package authz

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"io"
	"testing"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/keys"
)

// The fast reader takes only what the server's bundles hold and leaves any other file to OPA's reader.
func TestReadSignedLeavesUnknownFilesToOPA(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, err := MarshalPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	b, err := BuildSignedBundle("r1", map[string]string{"m.rego": "package kith.ext\n\nallow := true\n"}, key)
	if err != nil {
		t.Fatal(err)
	}
	vc := bundle.NewVerificationConfig(map[string]*keys.Config{BundleKeyID: {Key: string(pub), Algorithm: BundleSigningAlg}}, BundleKeyID, "", nil)
	if _, _, err := readSigned(b, vc); err != nil {
		t.Fatalf("the server's own bundle: %v", err)
	}
	for _, extra := range []string{"patch.json", "sub/.manifest", ".manifest.pb", "sub/data.json"} {
		withExtra := addFile(t, b, extra, []byte("{}"))
		if _, _, err := readSigned(withExtra, vc); !errors.Is(err, errNeedsParse) {
			t.Errorf("%s: fast reader error %v, want errNeedsParse", extra, err)
		}
		if _, _, err := ReadSignedBundle(withExtra, pub); err == nil {
			t.Errorf("%s: a file that is not signed was accepted", extra)
		}
	}
}

// addFile returns the bundle tarball with one more file.
func addFile(t *testing.T, b []byte, name string, data []byte) []byte {
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
		content, _ := io.ReadAll(tr)
		tw.WriteHeader(h)
		tw.Write(content)
	}
	tw.WriteHeader(&tar.Header{Name: "/" + name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
	tw.Write(data)
	tw.Close()
	zw.Close()
	return out.Bytes()
}
