package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/kithid/kith/internal/config"
)

// compareUpstream alternates self-signed and disk-upstream servers, rounds times each, and prints the
// rates and their ratio.
func compareUpstream(callers, conns int, duration time.Duration, rounds int) error {
	var self, up []float64
	for r := range rounds {
		s, err := measure(nil, callers, conns, duration, "", false)
		if err != nil {
			return fmt.Errorf("self-signed: %w", err)
		}
		u, err := measure(diskUpstream, callers, conns, duration, "", false)
		if err != nil {
			return fmt.Errorf("disk upstream: %w", err)
		}
		fmt.Printf("mint: round %d: self-signed %.0f SVIDs/s, disk upstream %.0f SVIDs/s\n", r+1, s, u)
		self, up = append(self, s), append(up, u)
	}
	ms, mu := mean(self), mean(up)
	fmt.Printf("mint: mean of %d rounds of %s: self-signed %.0f SVIDs/s, under an upstream %.0f SVIDs/s: %+.1f %%\n",
		rounds, duration, ms, mu, 100*(mu-ms)/ms)
	return nil
}

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// diskUpstream configures ca.upstream.disk with a root and an issuing CA under it, written to dir: SVID
// chains carry the issuing CA as well, as under a real corporate PKI.
func diskUpstream(cfg *config.Server, dir string) error {
	now := time.Now()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	rootTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Bench Root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		return err
	}
	root, _ := x509.ParseCertificate(rootDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "Bench Issuing CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(5 * 365 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		MaxPathLen: 1, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, &key.PublicKey, rootKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	d := &cfg.CA.Upstream.Disk
	d.CertFile, d.KeyFile, d.RootsFile = filepath.Join(dir, "issuing.pem"), filepath.Join(dir, "issuing.key"), filepath.Join(dir, "root.pem")
	for _, f := range []struct {
		path, typ string
		der       []byte
	}{{d.CertFile, "CERTIFICATE", der}, {d.KeyFile, "PRIVATE KEY", keyDER}, {d.RootsFile, "CERTIFICATE", rootDER}} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			return err
		}
	}
	return nil
}
