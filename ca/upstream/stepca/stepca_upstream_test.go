//go:build upstream

package stepca_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"os"
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
	"github.com/kithid/kith/ca/keymanager/memory"
	"github.com/kithid/kith/ca/upstream/stepca"
	"github.com/kithid/kith/ca/upstream/upstreamtest"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("example.org")
	workload = spiffeid.RequireFromString("spiffe://example.org/billing")
)

// verifiesToStepRoot checks chain with go-spiffe against a bundle of step-ca's root alone.
func verifiesToStepRoot(t *testing.T, s *upstreamtest.StepCA, chain []*x509.Certificate) {
	t.Helper()
	id, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, []*x509.Certificate{s.Root}))
	if err != nil || id != workload {
		t.Errorf("svid does not verify to step-ca's root: %v, %v", id, err)
	}
}

func TestStepUpstreamSignsTheIntermediate(t *testing.T) {
	s := upstreamtest.StartStepCA(t)
	// The ways to authenticate to step-ca: the JWK provisioner by name and password (its key fetched from
	// step-ca) or by key file, the X5C provisioner with a certificate from a CA it trusts; the root trusted
	// by file or fingerprint.
	encKey := filepath.Join(t.TempDir(), "provisioner.jwe")
	writeEncryptedKey(t, s, encKey)
	configs := map[string]stepca.Config{
		"jwk by name and password, root file": {URL: s.URL, RootFile: s.RootFile, Provisioner: s.Provisioner, PasswordFile: s.PasswordFile},
		"jwk key file, root fingerprint":      {URL: s.URL, Fingerprint: s.Fingerprint, Provisioner: s.Provisioner, KeyFile: encKey, PasswordFile: s.PasswordFile},
		"x5c certificate and key":             {URL: s.URL, RootFile: s.RootFile, Provisioner: s.X5CProvisioner, X5CCertFile: s.X5CCertFile, X5CKeyFile: s.X5CKeyFile},
	}
	for name, cfg := range configs {
		t.Run(name, func(t *testing.T) {
			up, err := stepca.New(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			c := catest.NewCA(t, td, func(c *ca.Config) { c.Upstream = up })
			if diff := cmp.Diff([]*x509.Certificate{s.Root}, c.Bundle().X509Authorities()); diff != "" {
				t.Errorf("bundle roots are not step-ca's (-want +got):\n%s", diff)
			}
			_, chain := catest.IssueSVID(t, c, workload, 0)
			verifiesToStepRoot(t, s, chain)
			inter := chain[1]
			want := []any{true, 0, true, "spiffe://example.org", true}
			got := []any{inter.IsCA, inter.MaxPathLen, inter.MaxPathLenZero, inter.URIs[0].String(), strings.HasPrefix(inter.Subject.CommonName, "Kith Intermediate CA ")}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("intermediate from step-ca: isCA, pathlen, pathlen zero, URI SAN, subject (-want +got):\n%s", diff)
			}
			if d := inter.NotAfter.Sub(inter.NotBefore); d < 7*24*time.Hour {
				t.Errorf("intermediate lives %s, want the 7 days asked for", d)
			}
			if err := c.Rotate(context.Background(), "test", false); err != nil {
				t.Fatal(err)
			}
			_, again := catest.IssueSVID(t, c, workload, 0)
			if again[1].Equal(inter) {
				t.Error("rotation did not mint a new intermediate through step-ca")
			}
			verifiesToStepRoot(t, s, again)
		})
	}
	t.Run("a wrong password is refused with the provisioner named", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "pw")
		if err := os.WriteFile(bad, []byte("wrong\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		up, err := stepca.New(context.Background(), stepca.Config{URL: s.URL, RootFile: s.RootFile, Provisioner: s.Provisioner, PasswordFile: bad})
		if err != nil {
			t.Fatal(err)
		}
		_, err = ca.New(context.Background(), ca.Config{TrustDomain: td, Keys: memory.New(), Store: catest.NewStore(), Upstream: up})
		if err == nil || !strings.Contains(err.Error(), `provisioner "upstream" key does not decrypt`) {
			t.Errorf("got %v, want the decryption failure", err)
		}
	})
}

// writeEncryptedKey writes the provisioner's encrypted key from step-ca's ca.json to path (0600).
func writeEncryptedKey(t *testing.T, s *upstreamtest.StepCA, path string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(s.Dir, "config", "ca.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Authority struct {
			Provisioners []struct {
				EncryptedKey string `json:"encryptedKey"`
			} `json:"provisioners"`
		} `json:"authority"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(cfg.Authority.Provisioners[0].EncryptedKey), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestStepUpstreamRestartRecoversWithinTheBackoffCap stops step-ca before the intermediate is due to be
// prepared and starts it again after a few failed attempts: the CA keeps signing meanwhile and prepares
// the next intermediate within the retry cap of step-ca being back.
func TestStepUpstreamRestartRecoversWithinTheBackoffCap(t *testing.T) {
	s := upstreamtest.StartStepCA(t)
	up, err := stepca.New(context.Background(), stepca.Config{URL: s.URL, RootFile: s.RootFile, Provisioner: s.Provisioner, PasswordFile: s.PasswordFile})
	if err != nil {
		t.Fatal(err)
	}
	const retryMax = 4 * time.Second
	c := catest.NewCA(t, td, func(c *ca.Config) {
		// prepared 30 s in (half of 2 min + the 1 min backdate), activated at 90 s
		c.Upstream, c.UpstreamName, c.UpstreamRetryMax = up, "step "+s.URL, retryMax
		c.IntermediateTTL, c.MaxX509SVIDTTL, c.X509SVIDTTL, c.MinSVIDTTL = 2*time.Minute, 30*time.Second, 20*time.Second, 10*time.Second
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()

	s.Stop()
	prepareAt := c.Status().PrepareAt
	deadline := time.Now().Add(time.Minute)
	// Three failures in a row since the intermediate was due: the mint itself has been retried.
	for st := c.Status().Upstream; st.Failures < 3 || st.LastErrorAt.Before(prepareAt.Add(4*time.Second)); st = c.Status().Upstream {
		if time.Now().After(deadline) {
			t.Fatalf("no 3 failed upstream calls within a minute of stopping step-ca: %+v", c.Status().Upstream)
		}
		time.Sleep(200 * time.Millisecond)
	}
	st := c.Status().Upstream
	if !strings.Contains(st.LastError, "connection refused") || st.Errors < 3 {
		t.Errorf("status while step-ca is down %+v, want connection refused counted", st)
	}
	_, chain := catest.IssueSVID(t, c, workload, 0) // still signing with the current intermediate
	verifiesToStepRoot(t, s, chain)

	s.Start()
	back := time.Now()
	for count(c, ca.KindX509Intermediate, ca.StatePrepared)+count(c, ca.KindX509Intermediate, ca.StateRetired) == 0 {
		if time.Since(back) > 2*retryMax {
			t.Fatalf("no intermediate from step-ca %s after it came back (retry cap %s): %+v", time.Since(back), retryMax, c.Status().Upstream)
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(back)
	t.Logf("step-ca back: intermediate minted after %s (retry cap %s)", took.Round(10*time.Millisecond), retryMax)
	if took > retryMax+time.Second {
		t.Errorf("intermediate minted %s after step-ca came back, want within the %s cap", took, retryMax)
	}
	if st := c.Status().Upstream; st.Failures != 0 {
		t.Errorf("status after recovery %+v, want no failures", st)
	}
}

func count(c *ca.CA, kind ca.AuthorityKind, state ca.AuthorityState) int {
	n := 0
	for _, a := range c.Authorities() {
		if a.Kind == kind && a.State == state {
			n++
		}
	}
	return n
}
