package authz

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sort"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/keys"
)

// BundleKeyID is the key ID of Kith's policy bundle signing key in .signatures.json.
const BundleKeyID = "kith-policy"

// BundleSigningAlg is the JWS algorithm policy bundles are signed with.
const BundleSigningAlg = "ES256"

// BuiltinPolicy returns the source of the built-in policy, for tools (such as policy tests) that compile
// custom modules together with it.
func BuiltinPolicy() string { return builtinSource }

// BuildSignedBundle packs Rego modules (file name → source) into an OPA bundle whose manifest carries the
// revision and roots, signed with key (ES256) in OPA's bundle signature format (.signatures.json).
func BuildSignedBundle(revision string, modules map[string]string, key *ecdsa.PrivateKey) ([]byte, error) {
	if key == nil {
		return nil, errors.New("sign policy bundle: no signing key")
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("sign policy bundle %s: %w", revision, err)
	}
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	roots := append([]string(nil), BundleRoots...)
	b := bundle.Bundle{Manifest: bundle.Manifest{Revision: revision, Roots: &roots}, Data: map[string]any{}}
	names := make([]string, 0, len(modules))
	for name := range modules {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		b.Modules = append(b.Modules, bundle.ModuleFile{URL: "/" + name, Path: "/" + name, Raw: []byte(modules[name])})
	}
	if err := b.GenerateSignature(bundle.NewSigningConfig(keyPEM, BundleSigningAlg, ""), BundleKeyID, false); err != nil {
		return nil, fmt.Errorf("sign policy bundle %s: %w", revision, err)
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).DisableFormat(true).Write(b); err != nil {
		return nil, fmt.Errorf("write policy bundle %s: %w", revision, err)
	}
	return buf.Bytes(), nil
}

// ReadSignedBundle verifies a bundle's signature with the PEM public key and unpacks its revision and
// modules. A bundle without a valid signature by that key, or with any file changed after signing, is an
// error.
func ReadSignedBundle(data []byte, publicKeyPEM []byte) (string, map[string]string, error) {
	if len(publicKeyPEM) == 0 {
		return "", nil, errors.New("read policy bundle: no verification key")
	}
	vc := bundle.NewVerificationConfig(map[string]*keys.Config{
		BundleKeyID: {Key: string(publicKeyPEM), Algorithm: BundleSigningAlg},
	}, BundleKeyID, "", nil)
	b, err := bundle.NewReader(bytes.NewReader(data)).WithBundleVerificationConfig(vc).Read()
	if err != nil {
		return "", nil, fmt.Errorf("verify policy bundle: %w", err)
	}
	modules := make(map[string]string, len(b.Modules))
	for _, m := range b.Modules {
		name := m.Path
		if len(name) > 0 && name[0] == '/' {
			name = name[1:]
		}
		modules[name] = string(m.Raw)
	}
	return b.Manifest.Revision, modules, nil
}

// MarshalPublicKey encodes a bundle verification key as PEM (PKIX).
func MarshalPublicKey(pub *ecdsa.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshal policy verification key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}
