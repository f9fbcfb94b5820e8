package policybundle_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kithid/kith/authz/authztest"
	"github.com/kithid/kith/authz/policybundle"
)

func TestSignedBundle(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, err := policybundle.MarshalPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	modules := map[string]string{"ext/deny.rego": "package kith.ext\n\ndeny contains \"no\" if input.request.method == \"DELETE\"\n"}
	b, err := policybundle.BuildSigned("abc123", modules, key)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("a signed bundle verifies and round-trips", func(t *testing.T) {
		rev, got, err := policybundle.ReadSigned(b, pub)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(modules, got); diff != "" || rev != "abc123" {
			t.Errorf("rev %q, modules (-want +got):\n%s", rev, diff)
		}
	})
	t.Run("another key is refused", func(t *testing.T) {
		other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		otherPub, _ := policybundle.MarshalPublicKey(&other.PublicKey)
		if _, _, err := policybundle.ReadSigned(b, otherPub); err == nil {
			t.Error("bundle verified with the wrong key")
		}
	})
	t.Run("a tampered bundle is refused", func(t *testing.T) {
		tampered := authztest.TamperBundle(t, b, "DELETE", "GET")
		if _, _, err := policybundle.ReadSigned(tampered, pub); err == nil {
			t.Error("tampered bundle verified")
		}
	})
	t.Run("a file added after signing is refused", func(t *testing.T) {
		added := authztest.RewriteBundle(t, b, func(files map[string][]byte) { files["/ext/more.rego"] = []byte("package kith.ext\n\nallow := true\n") })
		if _, _, err := policybundle.ReadSigned(added, pub); err == nil || !strings.Contains(err.Error(), "not included in bundle signature") {
			t.Errorf("error %v", err)
		}
	})
	t.Run("a file removed after signing is refused", func(t *testing.T) {
		removed := authztest.RewriteBundle(t, b, func(files map[string][]byte) { delete(files, "/ext/deny.rego") })
		if _, _, err := policybundle.ReadSigned(removed, pub); err == nil || !strings.Contains(err.Error(), "not found in the target bundle") {
			t.Errorf("error %v", err)
		}
	})
	t.Run("an unsigned bundle is refused", func(t *testing.T) {
		unsigned, _ := policybundle.Build("abc123", modules)
		if _, _, err := policybundle.ReadSigned(unsigned, pub); err == nil {
			t.Error("unsigned bundle verified")
		}
	})
}

func TestSignedBundlePackages(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := policybundle.MarshalPublicKey(&key.PublicKey)
	for _, tc := range []struct {
		name   string
		module string
		err    string // empty: the bundle is read
	}{
		{"a module in kith.ext is read", "package kith.ext\n\nallow := true\n", ""},
		{"comments before the package are skipped", "# policy\n\n  # more\npackage kith.ext.sub # trailing\n\nx := 1\n", ""},
		{"a module in envoy is read", "package envoy.authz\n\nallow := true\n", ""},
		{"a module outside the roots is refused", "package other\n\nx := 1\n", "do not permit"},
		{"a root that only prefixes the package name is not enough", "package kith.extra\n\nx := 1\n", "do not permit"},
		{"a quoted package is checked by the parser", "package kith[\"ext\"]\n\nx := 1\n", ""},
		{"a quoted package outside the roots is refused by the parser", "package kith[\"other\"]\n\nx := 1\n", "do not permit"},
		{"a module without a package is refused by the parser", "x := 1\n", "verify policy bundle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			modules := map[string]string{"m.rego": tc.module}
			b, err := policybundle.BuildSigned("r1", modules, key)
			if err != nil {
				t.Fatal(err)
			}
			rev, got, err := policybundle.ReadSigned(b, pub)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(modules, got); diff != "" || rev != "r1" {
				t.Errorf("rev %q, modules (-want +got):\n%s", rev, diff)
			}
		})
	}
}

// The fast reader takes only what the server's bundles hold and leaves any other file to OPA's reader.
func TestReadSignedLeavesUnknownFilesToOPA(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, err := policybundle.MarshalPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	b, err := policybundle.BuildSigned("r1", map[string]string{"m.rego": "package kith.ext\n\nallow := true\n"}, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := policybundle.ReadSignedFast(b, pub); err != nil {
		t.Fatalf("the server's own bundle: %v", err)
	}
	for _, extra := range []string{"patch.json", "sub/.manifest", ".manifest.pb", "sub/data.json"} {
		withExtra := authztest.RewriteBundle(t, b, func(files map[string][]byte) { files["/"+extra] = []byte("{}") })
		if err := policybundle.ReadSignedFast(withExtra, pub); !errors.Is(err, policybundle.ErrNeedsParse) {
			t.Errorf("%s: fast reader error %v, want ErrNeedsParse", extra, err)
		}
		if _, _, err := policybundle.ReadSigned(withExtra, pub); err == nil {
			t.Errorf("%s: a file that is not signed was accepted", extra)
		}
	}
}
