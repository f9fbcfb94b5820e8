//go:build upstream

package vault_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/catest"
	"github.com/kithid/kith/ca/upstream/upstreamtest"
	"github.com/kithid/kith/ca/upstream/vault"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("example.org")
	workload = spiffeid.RequireFromString("spiffe://example.org/billing")
)

// logs collects what the upstream logs, to check what it says it did.
type logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.buf.Write(p) }
func (l *logs) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.buf.String() }

func verifies(t *testing.T, roots []*x509.Certificate, chain []*x509.Certificate) {
	t.Helper()
	id, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, roots))
	if err != nil || id != workload {
		t.Errorf("svid does not verify to Vault's root: %v, %v", id, err)
	}
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// writePEM writes certs to a file for openssl.
func writePEM(t *testing.T, path string, certs ...*x509.Certificate) {
	t.Helper()
	var b bytes.Buffer
	for _, c := range certs {
		b.WriteString(string(pemCert(c)))
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A real Vault's PKI mount signs the Kith CA's intermediate, authenticated by a token file and by AppRole:
// the bundle is Vault's root, an SVID verifies to it with go-spiffe and with `openssl verify -CAfile root
// -untrusted chain`, the intermediate is a pathlen-0 CA with the trust domain's URI SAN, and a rotation
// mints a new one through Vault.
func TestVaultUpstreamSignsTheIntermediate(t *testing.T) {
	v := upstreamtest.StartVault(t)
	for name, cfg := range map[string]vault.Config{
		"token file": {Address: v.Addr, TokenFile: v.TokenFile},
		"approle":    {Address: v.Addr, AppRole: vault.AppRole{RoleID: v.RoleID, SecretIDFile: v.SecretIDFile}},
	} {
		t.Run(name, func(t *testing.T) {
			up, err := vault.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			c := catest.NewCA(t, td, func(c *ca.Config) { c.Upstream = up })
			if diff := cmp.Diff([]*x509.Certificate{v.Root}, c.Bundle().X509Authorities()); diff != "" {
				t.Errorf("bundle roots are not Vault's (-want +got):\n%s", diff)
			}
			_, chain := catest.IssueSVID(t, c, workload, 0)
			verifies(t, []*x509.Certificate{v.Root}, chain)
			inter := chain[1]
			got := []any{inter.IsCA, inter.MaxPathLen, inter.MaxPathLenZero, len(inter.URIs) == 1 && inter.URIs[0].String() == "spiffe://example.org"}
			if diff := cmp.Diff([]any{true, 0, true, true}, got); diff != "" {
				t.Errorf("intermediate from Vault: isCA, pathlen, pathlen zero, URI SAN (-want +got):\n%s", diff)
			}
			if openssl, err := exec.LookPath("openssl"); err == nil {
				dir := t.TempDir()
				writePEM(t, filepath.Join(dir, "root.pem"), v.Root)
				writePEM(t, filepath.Join(dir, "chain.pem"), chain[1:]...)
				writePEM(t, filepath.Join(dir, "svid.pem"), chain[0])
				out, err := exec.Command(openssl, "verify", "-CAfile", filepath.Join(dir, "root.pem"), "-untrusted", filepath.Join(dir, "chain.pem"), filepath.Join(dir, "svid.pem")).CombinedOutput()
				if err != nil || !strings.Contains(string(out), ": OK") {
					t.Errorf("openssl verify: %v\n%s", err, out)
				}
			}
			if err := c.Rotate(context.Background(), "test", false); err != nil {
				t.Fatal(err)
			}
			_, again := catest.IssueSVID(t, c, workload, 0)
			if again[1].Equal(inter) {
				t.Error("rotation did not mint a new intermediate through Vault")
			}
			verifies(t, []*x509.Certificate{v.Root}, again)
		})
	}
}

// Short-lived Vault tokens: an AppRole token (ttl 2 s, max 4 s) is renewed before half its TTL is left and,
// once it cannot be renewed past its max TTL, Kith logs in again; a token file's token is renewed, and a
// new token written to the file is taken up. Calls succeed throughout.
func TestVaultUpstreamTokenRenewalAndLoginAgain(t *testing.T) {
	v := upstreamtest.StartVault(t)
	v.SetAppRoleTTL("2s", "4s")

	var l logs
	up, err := vault.New(vault.Config{Address: v.Addr, AppRole: vault.AppRole{RoleID: v.RoleID, SecretIDFile: v.SecretIDFile},
		Logger: slog.New(slog.NewTextHandler(&l, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(7 * time.Second); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		if _, err := up.X509Roots(context.Background()); err != nil {
			t.Fatalf("X509Roots with a 2 s AppRole token: %v", err)
		}
	}
	out := l.String()
	if strings.Count(out, "vault login") < 2 || !strings.Contains(out, "vault token renewed") {
		t.Errorf("over 7 s with a 2 s token (max 4 s), want renewals and a second login; the upstream logged:\n%s", out)
	}

	l = logs{}
	v.NewToken("3s")
	fileUp, err := vault.New(vault.Config{Address: v.Addr, TokenFile: v.TokenFile, Logger: slog.New(slog.NewTextHandler(&l, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		if _, err := fileUp.X509Roots(context.Background()); err != nil {
			t.Fatalf("X509Roots with a 3 s renewable token from a file: %v", err)
		}
	}
	if !strings.Contains(l.String(), "vault token renewed") {
		t.Errorf("the token file's token was not renewed; the upstream logged:\n%s", l.String())
	}
	fresh := v.NewToken("1h")
	if _, err := fileUp.X509Roots(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(l.String(), "vault token read"); n != 2 {
		t.Errorf("the token file was read %d times, want twice (once more after it changed to %s…)", n, fresh[:6])
	}
}

// A root rotated in the mount (root/rotate/internal, made the default issuer) is published beside the old
// one, and the next intermediate chains to it; Vault stopped, the CA keeps signing and says why it cannot
// rotate; restarted (and provisioned again: a dev server keeps nothing), the CA rotates through it.
func TestVaultUpstreamRootRotatedAndRestart(t *testing.T) {
	v := upstreamtest.StartVault(t)
	up, err := vault.New(vault.Config{Address: v.Addr, AppRole: vault.AppRole{RoleID: v.RoleID, SecretIDFile: v.SecretIDFile}})
	if err != nil {
		t.Fatal(err)
	}
	c := catest.NewCA(t, td, func(c *ca.Config) { c.Upstream = up })
	old := v.Root
	next := v.RotateRoot()
	if err := c.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	roots := c.Bundle().X509Authorities()
	if !slices.ContainsFunc(roots, old.Equal) || !slices.ContainsFunc(roots, next.Equal) {
		t.Fatalf("bundle has %d roots; want the old and the rotated one", len(roots))
	}
	if err := c.Rotate(context.Background(), "test", false); err != nil {
		t.Fatal(err)
	}
	_, chain := catest.IssueSVID(t, c, workload, 0)
	verifies(t, []*x509.Certificate{next}, chain)

	v.Stop()
	if _, chain := catest.IssueSVID(t, c, workload, 0); len(chain) < 2 {
		t.Fatal("no svid with Vault down")
	}
	if err := c.Rotate(context.Background(), "test", false); err == nil || !strings.Contains(err.Error(), "vault upstream") {
		t.Errorf("rotation with Vault down: %v, want Vault's error", err)
	}
	v.Restart()
	if err := c.Rotate(context.Background(), "test", false); err != nil {
		t.Fatalf("rotation after Vault restarted: %v", err)
	}
	_, chain = catest.IssueSVID(t, c, workload, 0)
	verifies(t, []*x509.Certificate{v.Root}, chain)
}
