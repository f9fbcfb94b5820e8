package upstreamtest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
)

// Vault is a Vault dev server (in memory) the test provisioned as an upstream for Kith: a PKI mount "pki"
// whose default issuer is Root (a root the test made, imported with its key, so that a restarted server is
// provisioned with the same one), an ACL policy "kith" on the mount, an AppRole "kith" (RoleID, secret in
// SecretIDFile) and a token with that policy in TokenFile.
type Vault struct {
	*process
	Addr         string // http://127.0.0.1:PORT
	RootToken    string
	Root         *x509.Certificate
	RoleID       string
	SecretIDFile string // 0600
	TokenFile    string // 0600

	rootBundle string // the root's certificate and key, PEM
	secretID   string
	dir        string
	// appRoleTTL and appRoleMaxTTL are the AppRole's token_ttl and token_max_ttl ("" for Vault's
	// defaults): SetAppRoleTTL.
	appRoleTTL, appRoleMaxTTL string
}

// StartVault starts and provisions a Vault dev server; t.Cleanup stops it.
func StartVault(t testing.TB) *Vault {
	t.Helper()
	bin := binary(t, "vault-"+VaultVersion, "vault", "scripts/components/vault.sh", "tens of minutes cold, cached afterwards")
	dir := t.TempDir()
	port := FreePort(t)
	addr := "127.0.0.1:" + itoa(port)
	v := &Vault{
		process: &process{
			t: t, name: "vault", bin: bin,
			args: []string{"server", "-dev", "-dev-root-token-id=kith-test-root", "-dev-listen-address=" + addr, "-dev-no-store-token"},
			env:  []string{"HOME=" + dir, "VAULT_DISABLE_MLOCK=true"}, log: filepath.Join(dir, "vault.log"),
			ready: httpReady(&http.Client{Timeout: 2 * time.Second}, "http://"+addr+"/v1/sys/health"),
		},
		Addr: "http://" + addr, RootToken: "kith-test-root", RoleID: "kith-role-id", secretID: "kith-secret-id",
		SecretIDFile: filepath.Join(dir, "secret-id"), TokenFile: filepath.Join(dir, "token"), dir: dir,
	}
	v.rootBundle, v.Root = newRoot(t, "Vault test root")
	if err := os.WriteFile(v.SecretIDFile, []byte(v.secretID+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v.Start()
	t.Cleanup(func() {
		v.Stop()
		if t.Failed() {
			t.Logf("vault log:\n%s", bytes.TrimSpace([]byte(v.Log())))
		}
	})
	v.Provision()
	return v
}

// selfSignedCA makes an EC CA certificate valid from an hour ago for ttl, and its key.
func selfSignedCA(t testing.TB, cn string, ttl time.Duration) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(ttl),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// newRoot makes a self-signed EC root valid for a year and returns its certificate and key as one PEM.
func newRoot(t testing.TB, cn string) (string, *x509.Certificate) {
	t.Helper()
	cert, key := selfSignedCA(t, cn, 365*24*time.Hour)
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})) +
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})), cert
}

// Client is a client with the root token.
func (v *Vault) Client() *vaultapi.Client {
	v.t.Helper()
	cfg := vaultapi.DefaultConfig()
	cfg.Address = v.Addr
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		v.t.Fatal(err)
	}
	c.SetToken(v.RootToken)
	return c
}

// write is a Logical().Write with the root token that fails the test on an error.
func (v *Vault) write(p string, data map[string]any) *vaultapi.Secret {
	v.t.Helper()
	s, err := v.Client().Logical().Write(p, data)
	if err != nil {
		v.t.Fatalf("vault write %s: %v", p, err)
	}
	return s
}

// Provision sets the dev server up (again, after a restart: its storage is in memory) with the same root,
// policy, AppRole IDs, and a new token in TokenFile (ttl 1h, renewable).
func (v *Vault) Provision() {
	v.t.Helper()
	c := v.Client()
	if err := c.Sys().Mount("pki", &vaultapi.MountInput{Type: "pki", Config: vaultapi.MountConfigInput{MaxLeaseTTL: "8760h"}}); err != nil {
		v.t.Fatalf("vault mount pki: %v", err)
	}
	v.write("pki/config/ca", map[string]any{"pem_bundle": v.rootBundle})
	if err := c.Sys().PutPolicy("kith", `path "pki/*" { capabilities = ["create", "read", "update", "list"] }`); err != nil {
		v.t.Fatalf("vault policy: %v", err)
	}
	if err := c.Sys().EnableAuthWithOptions("approle", &vaultapi.EnableAuthOptions{Type: "approle"}); err != nil {
		v.t.Fatalf("vault enable approle: %v", err)
	}
	v.SetAppRoleTTL(v.appRoleTTL, v.appRoleMaxTTL)
	v.write("auth/approle/role/kith/role-id", map[string]any{"role_id": v.RoleID})
	v.write("auth/approle/role/kith/custom-secret-id", map[string]any{"secret_id": v.secretID})
	v.NewToken("1h")
}

// SetAppRoleTTL sets the AppRole's token_ttl and token_max_ttl ("" for Vault's defaults).
func (v *Vault) SetAppRoleTTL(ttl, maxTTL string) {
	v.t.Helper()
	v.appRoleTTL, v.appRoleMaxTTL = ttl, maxTTL
	role := map[string]any{"token_policies": "kith"}
	if ttl != "" {
		role["token_ttl"] = ttl
	}
	if maxTTL != "" {
		role["token_max_ttl"] = maxTTL
	}
	v.write("auth/approle/role/kith", role)
}

// NewToken writes a new renewable token with policy kith and the given TTL to TokenFile.
func (v *Vault) NewToken(ttl string) string {
	v.t.Helper()
	s, err := v.Client().Auth().Token().Create(&vaultapi.TokenCreateRequest{Policies: []string{"kith"}, TTL: ttl, Renewable: ptr(true)})
	if err != nil {
		v.t.Fatalf("vault token create: %v", err)
	}
	// A new modification time even within the file system's timestamp resolution.
	_ = os.Remove(v.TokenFile)
	if err := os.WriteFile(v.TokenFile, []byte(s.Auth.ClientToken+"\n"), 0o600); err != nil {
		v.t.Fatal(err)
	}
	return s.Auth.ClientToken
}

// RotateRoot makes a new root in the mount and the mount's default issuer, as `vault write
// pki/root/rotate/internal` and `pki/config/issuers default=…` do, and returns it.
func (v *Vault) RotateRoot() *x509.Certificate {
	v.t.Helper()
	s := v.write("pki/root/rotate/internal", map[string]any{"common_name": "Vault test root 2", "key_type": "ec", "ttl": "8760h"})
	id := fmt.Sprint(s.Data["issuer_id"])
	v.write("pki/config/issuers", map[string]any{"default": id})
	block, _ := pem.Decode([]byte(fmt.Sprint(s.Data["certificate"])))
	if block == nil {
		v.t.Fatalf("vault root/rotate: no certificate in %v", s.Data)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		v.t.Fatal(err)
	}
	return c
}

// Restart stops the server and starts and provisions it again.
func (v *Vault) Restart() {
	v.t.Helper()
	v.Stop()
	v.Start()
	v.Provision()
}

func ptr[T any](v T) *T { return &v }
