package upstreamtest

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
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
	prov := cfg["authority"].(map[string]any)["provisioners"].([]any)[0].(map[string]any)
	prov["options"] = map[string]any{"x509": map[string]any{"template": stepTemplate}}
	prov["claims"] = map[string]any{"maxTLSCertDuration": "2160h", "defaultTLSCertDuration": "168h", "minTLSCertDuration": "1m"}
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
