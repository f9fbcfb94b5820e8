package cli

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

// devEnv is `kith dev` running in this process, with the environment a workload on its node has.
type devEnv struct {
	dir  string
	vars map[string]string
}

func startDev(t *testing.T) *devEnv {
	t.Helper()
	return startDevWith(t, nil)
}

// startDevWith starts kith dev with extra flags, in an environment of vars.
func startDevWith(t *testing.T, vars map[string]string, extra ...string) *devEnv {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var out, errb bytes.Buffer // written by kith dev only; read after it returns
	args := append([]string{"dev", "--data-dir", dir, "--http", "127.0.0.1:0", "--log-level", "warn"}, extra...)
	go func() {
		done <- MainEnv(ctx, args, &out, &errb, func(k string) string { return vars[k] })
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("kith dev exited %d: %s", code, errb.String())
		}
	})
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(dir, "agent.sock")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("kith dev did not start its agent")
		}
	}
	return &devEnv{dir: dir, vars: map[string]string{
		"KITH_ADMIN_SOCKET":      filepath.Join(dir, "admin.sock"),
		"SPIFFE_ENDPOINT_SOCKET": "unix://" + filepath.Join(dir, "agent.sock"),
	}}
}

func (d *devEnv) kith(args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := MainEnv(context.Background(), args, &out, &errb, func(k string) string { return d.vars[k] })
	return out.String(), errb.String(), code
}

func TestSVIDFetchAndHealthcheckAsAWorkload(t *testing.T) {
	d := startDev(t)
	uid := strconv.Itoa(os.Getuid())

	t.Run("the agent is healthy though this process has no entry yet", func(t *testing.T) {
		if out, errs, code := d.kith("agent", "healthcheck"); code != 0 || !strings.Contains(out, "Agent is healthy.") {
			t.Fatalf("healthcheck = %d %q %q", code, out, errs)
		}
	})
	t.Run("without an entry the fetch says what to create", func(t *testing.T) {
		_, errs, code := d.kith("svid", "fetch")
		if code != 1 || !strings.Contains(errs, "no registration entry matches it") || !strings.Contains(errs, "--selector unix:uid:"+uid) {
			t.Fatalf("fetch = %d %q", code, errs)
		}
	})
	if _, errs, code := d.kith("entry", "create", "--spiffe-id", "spiffe://kith.test/me", "--selector", "unix:uid:"+uid); code != 0 {
		t.Fatalf("entry create: %s", errs)
	}

	t.Run("--write writes the chain, a private key and the bundle, which verify", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "svids")
		var out, errs string
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) { // until the agent holds the SVID
			var code int
			if out, errs, code = d.kith("svid", "fetch", "--write", dir); code == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("fetch never succeeded: %s", errs)
			}
		}
		if !strings.Contains(out, "spiffe://kith.test/me") || !strings.Contains(out, "kith.test (1 roots)") {
			t.Errorf("output:\n%s", out)
		}
		fi, err := os.Stat(filepath.Join(dir, "svid.0.key"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("svid.0.key: %v %v, want mode 0600", fi, err)
		}
		chain := readCerts(t, filepath.Join(dir, "svid.0.pem"))
		roots := x509.NewCertPool()
		for _, c := range readCerts(t, filepath.Join(dir, "bundle.0.pem")) {
			roots.AddCert(c)
		}
		inter := x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("the written chain does not verify against the written bundle: %v", err)
		}
		if got := chain[0].URIs[0].String(); got != "spiffe://kith.test/me" {
			t.Errorf("leaf SPIFFE ID %s", got)
		}
	})
	t.Run("--audience prints a JWT-SVID for it", func(t *testing.T) {
		out, errs, code := d.kith("svid", "fetch", "--audience", "orders")
		if code != 0 {
			t.Fatalf("fetch --audience: %s", errs)
		}
		tok, err := jwtsvid.ParseInsecure(strings.TrimSpace(out), []string{"orders"})
		if err != nil || tok.ID != spiffeid.RequireFromString("spiffe://kith.test/me") {
			t.Errorf("token %q: %v, %v", out, tok, err)
		}
	})
	t.Run("--spiffe-id naming an identity this workload does not hold lists those it holds", func(t *testing.T) {
		for _, other := range []string{"spiffe://other.test/payments", "spiffe://kith.test/not-me"} {
			_, errs, code := d.kith("svid", "fetch", "--audience", "orders", "--spiffe-id", other)
			want := "--spiffe-id " + other + " is not among this workload's identities; it has spiffe://kith.test/me"
			if code != 1 || !strings.Contains(errs, want) || strings.Contains(errs, "kith entry create") {
				t.Errorf("fetch --spiffe-id %s = %d %q; want %q", other, code, errs, want)
			}
		}
	})
	t.Run("--spiffe-id without --audience is refused", func(t *testing.T) {
		if _, errs, code := d.kith("svid", "fetch", "--spiffe-id", "spiffe://kith.test/me"); code == 0 || !strings.Contains(errs, "give --audience") {
			t.Errorf("= %d %q", code, errs)
		}
	})
	t.Run("a socket that is not the agent's", func(t *testing.T) {
		_, errs, code := d.kith("svid", "fetch", "--socket", d.vars["KITH_ADMIN_SOCKET"])
		if code != 1 || !strings.Contains(errs, "does not serve the SPIFFE Workload API") {
			t.Errorf("= %d %q", code, errs)
		}
	})
	t.Run("no socket: unhealthy", func(t *testing.T) {
		out, errs, code := d.kith("agent", "healthcheck", "--socket", filepath.Join(t.TempDir(), "none.sock"))
		if code != 1 || out != "" || !strings.Contains(errs, "agent is unhealthy: no Workload API socket at") {
			t.Errorf("= %d %q %q", code, out, errs)
		}
	})
}

func readCerts(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []*x509.Certificate
	for b, rest := pem.Decode(data); b != nil; b, rest = pem.Decode(rest) {
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatalf("%s holds no certificates", path)
	}
	return out
}

func TestEntryCreateWarnsAboutAnExecutableWithoutAUser(t *testing.T) {
	d := startDev(t)
	tests := []struct {
		name      string
		selectors []string
		warn      bool
	}{
		{name: "a path alone", selectors: []string{"unix:path:/usr/bin/sleep"}, warn: true},
		{name: "a hash alone", selectors: []string{"unix:sha256:" + strings.Repeat("ab", 32)}, warn: true},
		{name: "a path and a uid", selectors: []string{"unix:path:/usr/bin/sleep", "unix:uid:1000"}},
		{name: "a hash and a group", selectors: []string{"unix:sha256:" + strings.Repeat("cd", 32), "unix:group:app"}},
		{name: "a uid alone", selectors: []string{"unix:uid:1001"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"entry", "create", "--spiffe-id", "spiffe://kith.test/w" + strconv.Itoa(i)}
			for _, s := range tt.selectors {
				args = append(args, "--selector", s)
			}
			_, errs, code := d.kith(args...)
			if code != 0 {
				t.Fatalf("entry create: %s", errs)
			}
			if got := strings.Contains(errs, "warning: this entry selects an executable but no user"); got != tt.warn {
				t.Errorf("warning printed = %v, want %v (stderr %q)", got, tt.warn, errs)
			}
		})
	}
}
