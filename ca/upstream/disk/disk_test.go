package disk_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/catest"
	"github.com/kithid/kith/ca/upstream/disk"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("example.org")
	workload = spiffeid.RequireFromString("spiffe://example.org/billing")
)

// openssl runs openssl in dir and fails the test with its output if it fails.
func openssl(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// opensslRoot makes a self-signed P-256 root with openssl in dir: root.pem and root.key (0600).
func opensslRoot(t *testing.T, dir string) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl is not installed: apt-get install -y openssl")
	}
	openssl(t, dir, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", "root.key", "-out", "root.pem", "-days", "3650", "-subj", "/O=Corp/CN=Corp Root CA",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
	if err := os.Chmod(filepath.Join(dir, "root.key"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// opensslIntermediate makes, with openssl, a corporate intermediate (pathlen 1) signed by the root in dir:
// corp.pem and corp.key (0600).
func opensslIntermediate(t *testing.T, dir string) {
	t.Helper()
	openssl(t, dir, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", "corp.key", "-out", "corp.csr", "-subj", "/O=Corp/CN=Corp Issuing CA")
	if err := os.WriteFile(filepath.Join(dir, "ext.cnf"), []byte("basicConstraints=critical,CA:TRUE,pathlen:1\nkeyUsage=critical,keyCertSign,cRLSign\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	openssl(t, dir, "x509", "-req", "-in", "corp.csr", "-CA", "root.pem", "-CAkey", "root.key", "-CAcreateserial",
		"-days", "1825", "-extfile", "ext.cnf", "-out", "corp.pem")
	if err := os.Chmod(filepath.Join(dir, "corp.key"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func newCA(t *testing.T, up ca.UpstreamAuthority) *ca.CA {
	t.Helper()
	return catest.NewCA(t, td, func(c *ca.Config) { c.Upstream = up })
}

func writePEM(t *testing.T, path string, certs ...*x509.Certificate) {
	t.Helper()
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkSVID verifies an SVID of c with go-spiffe against rootFile alone and with `openssl verify
// -CAfile rootFile -untrusted chain`.
func checkSVID(t *testing.T, dir string, c *ca.CA, rootFile string) []*x509.Certificate {
	t.Helper()
	_, chain := catest.IssueSVID(t, c, workload, 0)
	data, err := os.ReadFile(rootFile)
	if err != nil {
		t.Fatal(err)
	}
	roots, err := x509bundle.Parse(td, data)
	if err != nil {
		t.Fatal(err)
	}
	if id, _, err := x509svid.Verify(chain, roots); err != nil || id != workload {
		t.Errorf("go-spiffe verify against %s: %v, %v", filepath.Base(rootFile), id, err)
	}
	writePEM(t, filepath.Join(dir, "svid.pem"), chain[0])
	writePEM(t, filepath.Join(dir, "svid-chain.pem"), chain[1:]...)
	out := openssl(t, dir, "verify", "-CAfile", rootFile, "-untrusted", "svid-chain.pem", "svid.pem")
	if strings.TrimSpace(out) != "svid.pem: OK" {
		t.Errorf("openssl verify: %s", out)
	}
	return chain
}

func TestDiskUpstreamSignsUnderAnOpenSSLRoot(t *testing.T) {
	dir := t.TempDir()
	opensslRoot(t, dir)
	up, err := disk.New(disk.Config{CertFile: filepath.Join(dir, "root.pem"), KeyFile: filepath.Join(dir, "root.key")})
	if err != nil {
		t.Fatal(err)
	}
	c := newCA(t, up)
	chain := checkSVID(t, dir, c, filepath.Join(dir, "root.pem"))
	if len(chain) != 2 {
		t.Errorf("svid chain has %d certificates, want the leaf and kith's intermediate", len(chain))
	}
	root, err := os.ReadFile(filepath.Join(dir, "root.pem"))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := x509bundle.Parse(td, root)
	if diff := cmp.Diff(want.X509Authorities(), c.Bundle().X509Authorities()); diff != "" {
		t.Errorf("bundle does not publish the upstream root (-want +got):\n%s", diff)
	}
}

func TestDiskUpstreamWithAChainAndARootsBundle(t *testing.T) {
	dir := t.TempDir()
	opensslRoot(t, dir)
	opensslIntermediate(t, dir)
	up, err := disk.New(disk.Config{
		CertFile:  filepath.Join(dir, "corp.pem"),
		KeyFile:   filepath.Join(dir, "corp.key"),
		RootsFile: filepath.Join(dir, "root.pem"),
	})
	if err != nil {
		t.Fatal(err)
	}
	c := newCA(t, up)
	chain := checkSVID(t, dir, c, filepath.Join(dir, "root.pem"))
	if len(chain) != 3 || chain[2].Subject.CommonName != "Corp Issuing CA" {
		t.Errorf("svid chain: %d certificates, want the leaf, kith's intermediate and Corp Issuing CA", len(chain))
	}
	// Rotation goes through the upstream again, and the new chain verifies too.
	if err := c.Rotate(context.Background(), "test", false); err != nil {
		t.Fatal(err)
	}
	again := checkSVID(t, dir, c, filepath.Join(dir, "root.pem"))
	if again[1].Equal(chain[1]) {
		t.Error("rotation did not mint a new intermediate")
	}
}

func TestDiskUpstreamCapsTheIntermediateAtItsCertificate(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	cert, key := goCA(t, now.Add(-time.Hour), now.Add(48*time.Hour), true)
	writePEM(t, filepath.Join(dir, "ca.pem"), cert)
	writeKey(t, filepath.Join(dir, "ca.key"), key, 0o600)
	up, err := disk.New(disk.Config{CertFile: filepath.Join(dir, "ca.pem"), KeyFile: filepath.Join(dir, "ca.key")})
	if err != nil {
		t.Fatal(err)
	}
	c := newCA(t, up) // asks for 7 days
	for _, a := range c.Authorities() {
		if a.Kind == ca.KindX509Intermediate && !a.NotAfter.Equal(cert.NotAfter) {
			t.Errorf("intermediate NotAfter %s, want the upstream's %s", a.NotAfter, cert.NotAfter)
		}
	}
	_, chain := catest.IssueSVID(t, c, workload, 24*time.Hour)
	if chain[0].NotAfter.After(cert.NotAfter) {
		t.Errorf("svid outlives the upstream certificate")
	}
}

// goCA makes a self-signed certificate valid [nb, na]; isCA false makes a leaf.
func goCA(t *testing.T, nb, na time.Time, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "Go CA"}, NotBefore: nb, NotAfter: na,
		BasicConstraintsValid: true, IsCA: isCA,
	}
	if isCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	}
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

func writeKey(t *testing.T, path string, key *ecdsa.PrivateKey, mode os.FileMode) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func TestDiskUpstreamRefusesBadFiles(t *testing.T) {
	now := time.Now()
	good, goodKey := goCA(t, now.Add(-time.Hour), now.Add(365*24*time.Hour), true)
	_, otherKey := goCA(t, now.Add(-time.Hour), now.Add(time.Hour), true)
	expired, expiredKey := goCA(t, now.Add(-48*time.Hour), now.Add(-24*time.Hour), true)
	leaf, leafKey := goCA(t, now.Add(-time.Hour), now.Add(24*time.Hour), false)
	other, _ := goCA(t, now.Add(-time.Hour), now.Add(24*time.Hour), true)
	tests := []struct {
		name    string
		cert    *x509.Certificate
		key     *ecdsa.PrivateKey
		keyMode os.FileMode
		roots   *x509.Certificate // written to roots.pem if set
		want    string            // in the error, after the file's path
		file    string            // the file the error must name
	}{
		{"a key that is not the certificate's", good, otherKey, 0o600, nil, "is not the key of the certificate", "ca.key"},
		{"an expired certificate", expired, expiredKey, 0o600, nil, "expired at", "ca.pem"},
		{"a certificate that is not a CA", leaf, leafKey, 0o600, nil, "is not a CA certificate", "ca.pem"},
		{"a key others can read", good, goodKey, 0o644, nil, "make it readable by its owner only", "ca.key"},
		{"roots that did not sign the certificate", good, goodKey, 0o600, other, "is not signed by any root in", "roots.pem"},
	}
	for _, tt := range tests {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := disk.Config{CertFile: filepath.Join(dir, "ca.pem"), KeyFile: filepath.Join(dir, "ca.key")}
			writePEM(t, cfg.CertFile, tt.cert)
			writeKey(t, cfg.KeyFile, tt.key, tt.keyMode)
			if tt.roots != nil {
				cfg.RootsFile = filepath.Join(dir, "roots.pem")
				writePEM(t, cfg.RootsFile, tt.roots)
			}
			_, err := disk.New(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), filepath.Join(dir, tt.file)) {
				t.Errorf("got %v, want an error naming %s and saying %q", err, tt.file, tt.want)
			}
		})
	}
}
