package upstreamtest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.step.sm/crypto/pemutil"
)

// StepCA is a step-ca the test initialised (`step ca init`) and runs on 127.0.0.1. Its JWK provisioner
// (Provisioner, password in PasswordFile) signs CA certificates with pathlen 0 through an x509 template
// that keeps the CSR's subject and the token's SANs, for up to 90 days; step-ca signs with its root
// directly (ca.json's crt and key point at the root), so the chain above Kith's intermediate is empty.
type StepCA struct {
	*process
	URL          string
	Dir          string // STEPPATH
	RootFile     string // root_ca.crt
	Root         *x509.Certificate
	Fingerprint  string // hex SHA-256 of the root
	Provisioner  string
	PasswordFile string // also decrypts the CA keys
	Step         string // the step CLI
	// X5CProvisioner is an X5C provisioner trusting a CA of the test's own; X5CCertFile (a leaf that CA
	// signed, then the CA) and X5CKeyFile (the leaf's key, 0600) authenticate to it.
	X5CProvisioner, X5CCertFile, X5CKeyFile string
}

// stepTemplate makes a CA certificate that may sign leaves only, from the CSR's subject.
const stepTemplate = `{
	"subject": {{ toJson .Insecure.CR.Subject }},
	"sans": {{ toJson .SANs }},
	"keyUsage": ["certSign", "crlSign"],
	"basicConstraints": {"isCA": true, "maxPathLen": 0}
}`

// StartStepCA initialises and starts a step-ca; t.Cleanup stops it.
func StartStepCA(t testing.TB) *StepCA {
	t.Helper()
	const what = "minutes cold, cached afterwards"
	stepCA := binary(t, "stepca-"+StepVersion, "step-ca", "scripts/components/stepca.sh", what)
	step := binary(t, "stepca-"+StepVersion, "step", "scripts/components/stepca.sh", what)
	dir := t.TempDir()
	steppath := filepath.Join(dir, "step")
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte("kith-upstream-test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := FreePort(t)
	addr := "127.0.0.1:" + itoa(port)
	init := exec.Command(step, "ca", "init", "--deployment-type=standalone", "--name=Upstream", "--dns=127.0.0.1",
		"--address="+addr, "--provisioner=upstream", "--password-file="+pw, "--provisioner-password-file="+pw)
	init.Env = append(os.Environ(), "STEPPATH="+steppath)
	if out, err := init.CombinedOutput(); err != nil {
		t.Fatalf("step ca init: %v\n%s", err, out)
	}
	cfgPath := filepath.Join(steppath, "config", "ca.json")
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["crt"] = cfg["root"]
	cfg["key"] = filepath.Join(steppath, "secrets", "root_ca_key")
	authority := cfg["authority"].(map[string]any)
	prov := authority["provisioners"].([]any)[0].(map[string]any)
	prov["options"] = map[string]any{"x509": map[string]any{"template": stepTemplate}}
	prov["claims"] = map[string]any{"maxTLSCertDuration": "2160h", "defaultTLSCertDuration": "168h", "minTLSCertDuration": "1m"}
	x5cRoots, x5cCert, x5cKey := x5cIdentity(t, dir)
	authority["provisioners"] = append(authority["provisioners"].([]any), map[string]any{
		"type": "X5C", "name": "x5c", "roots": base64.StdEncoding.EncodeToString(x5cRoots),
		"options": prov["options"], "claims": prov["claims"],
	})
	if raw, err = json.MarshalIndent(cfg, "", "  "); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	rootFile := filepath.Join(steppath, "certs", "root_ca.crt")
	root, err := pemutil.ReadCertificate(rootFile)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(root.Raw)
	pool := x509.NewCertPool()
	pool.AddCert(root)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	s := &StepCA{
		process: &process{
			t: t, name: "step-ca", bin: stepCA, args: []string{"--password-file=" + pw, cfgPath},
			env: []string{"STEPPATH=" + steppath}, log: filepath.Join(dir, "step-ca.log"),
			ready: httpReady(client, "https://"+addr+"/health"),
		},
		URL: "https://" + addr, Dir: steppath, RootFile: rootFile, Root: root, Fingerprint: hex.EncodeToString(sum[:]),
		Provisioner: "upstream", PasswordFile: pw, Step: step,
		X5CProvisioner: "x5c", X5CCertFile: x5cCert, X5CKeyFile: x5cKey,
	}
	s.Start()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("step-ca log:\n%s", bytes.TrimSpace([]byte(s.Log())))
		}
	})
	return s
}

// x5cIdentity makes a CA an X5C provisioner trusts and a leaf it signed, as a company's own PKI would issue
// one to a Kith server. It returns the CA (PEM, for the provisioner's roots) and the paths of the leaf's
// chain (leaf, then the CA) and key.
func x5cIdentity(t testing.TB, dir string) (rootsPEM []byte, certFile, keyFile string) {
	t.Helper()
	caCert, caKey := selfSignedCA(t, "X5C test CA", 30*24*time.Hour)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kith-server"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature},
		caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	rootsPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw})
	certFile, keyFile = filepath.Join(dir, "x5c.crt"), filepath.Join(dir, "x5c.key")
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}), rootsPEM...)
	if err := os.WriteFile(certFile, chain, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return rootsPEM, certFile, keyFile
}
