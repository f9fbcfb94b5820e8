package policybundle

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/keys"
)

// KeyID is the key ID of Kith's policy bundle signing key in .signatures.json.
const KeyID = "kith-policy"

// SigningAlg is the JWS algorithm policy bundles are signed with.
const SigningAlg = "ES256"

// BuildSigned packs Rego modules (file name → source) into an OPA bundle whose manifest carries the
// revision and roots, signed with key (ES256) in OPA's bundle signature format (.signatures.json).
func BuildSigned(revision string, modules map[string]string, key *ecdsa.PrivateKey) ([]byte, error) {
	if key == nil {
		return nil, errors.New("sign policy bundle: no signing key")
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("sign policy bundle %s: %w", revision, err)
	}
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	roots := append([]string(nil), Roots...)
	b := bundle.Bundle{Manifest: bundle.Manifest{Revision: revision, Roots: &roots}, Data: map[string]any{}}
	names := make([]string, 0, len(modules))
	for name := range modules {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		b.Modules = append(b.Modules, bundle.ModuleFile{URL: "/" + name, Path: "/" + name, Raw: []byte(modules[name])})
	}
	if err := b.GenerateSignature(bundle.NewSigningConfig(keyPEM, SigningAlg, ""), KeyID, false); err != nil {
		return nil, fmt.Errorf("sign policy bundle %s: %w", revision, err)
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).DisableFormat(true).Write(b); err != nil {
		return nil, fmt.Errorf("write policy bundle %s: %w", revision, err)
	}
	return buf.Bytes(), nil
}

// ReadSigned verifies a bundle's signature with the PEM public key and unpacks its revision and
// modules. A bundle without a valid signature by that key, with any file changed, added or removed after
// signing, or with a module outside the manifest's roots, is an error.
//
// The modules are not parsed (whoever compiles them parses them): the roots are checked against each
// module's package line. A module whose package line is not a plain dotted name is left to OPA's bundle
// reader, which parses every module.
func ReadSigned(data []byte, publicKeyPEM []byte) (string, map[string]string, error) {
	if len(publicKeyPEM) == 0 {
		return "", nil, errors.New("read policy bundle: no verification key")
	}
	vc := verificationConfig(publicKeyPEM)
	rev, modules, err := readSigned(data, vc)
	if errors.Is(err, errNeedsParse) {
		return readSignedParsed(data, vc)
	}
	if err != nil {
		return "", nil, fmt.Errorf("verify policy bundle: %w", err)
	}
	return rev, modules, nil
}

// verificationConfig checks bundle signatures against the PEM public key.
func verificationConfig(publicKeyPEM []byte) *bundle.VerificationConfig {
	return bundle.NewVerificationConfig(map[string]*keys.Config{
		KeyID: {Key: string(publicKeyPEM), Algorithm: SigningAlg},
	}, KeyID, "", nil)
}

// errNeedsParse is returned by readSigned for a bundle it leaves to OPA's reader: a module whose package
// it cannot read without a parser, or a file other than the manifest, data.json and modules.
var errNeedsParse = errors.New("module package needs the parser")

// readSigned verifies a signed bundle file by file with OPA's signature and hash checks, without
// parsing its modules.
func readSigned(data []byte, vc *bundle.VerificationConfig) (string, map[string]string, error) {
	loader := bundle.NewTarballLoaderWithBaseURL(bytes.NewReader(data), "").WithSizeLimitBytes(bundle.DefaultSizeLimitBytes)
	files := map[string][]byte{}
	var sigs []byte
	for {
		f, err := loader.NextFile()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", nil, fmt.Errorf("bundle read failed: %w", err)
		}
		var buf bytes.Buffer
		_, err = f.Read(&buf, bundle.DefaultSizeLimitBytes) // io.EOF: the whole file was read
		f.Close()
		if err != nil && !errors.Is(err, io.EOF) {
			return "", nil, fmt.Errorf("read %s: %w", f.Path(), err)
		}
		name := strings.TrimPrefix(f.Path(), "/")
		if bundle.IsSignaturesFile(f.Path()) {
			if sigs != nil {
				return "", nil, errors.New("bundle contains multiple signatures files")
			}
			sigs = buf.Bytes()
			continue
		}
		if _, dup := files[name]; dup {
			return "", nil, fmt.Errorf("bundle contains %s twice", name)
		}
		files[name] = buf.Bytes()
	}
	for name := range files {
		// What the server's bundles hold; anything else (a nested manifest or data file, a binary manifest,
		// a delta bundle's patch) is left to OPA's reader, which knows what it means.
		if name != ".manifest" && name != "data.json" && !strings.HasSuffix(name, ".rego") {
			return "", nil, errNeedsParse
		}
	}
	if sigs == nil {
		return "", nil, errors.New("bundle missing .signatures.json file")
	}
	var sc bundle.SignaturesConfig
	if err := json.Unmarshal(sigs, &sc); err != nil {
		return "", nil, fmt.Errorf("bundle load failed on signatures decode: %w", err)
	}
	signed, err := bundle.VerifyBundleSignature(sc, vc)
	if err != nil {
		return "", nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if err := bundle.VerifyBundleFile(name, *bytes.NewBuffer(files[name]), signed); err != nil {
			return "", nil, err
		}
		delete(signed, name)
	}
	if len(signed) > 0 {
		return "", nil, fmt.Errorf("file(s) %v specified in bundle signatures but not found in the target bundle", slices.Sorted(maps.Keys(signed)))
	}
	var m bundle.Manifest
	if raw, ok := files[".manifest"]; ok {
		if err := json.Unmarshal(raw, &m); err != nil {
			return "", nil, fmt.Errorf("bundle load failed on manifest decode: %w", err)
		}
	}
	roots := []string{""}
	if m.Roots != nil {
		roots = make([]string, len(*m.Roots))
		for i, r := range *m.Roots {
			roots[i] = strings.Trim(r, "/")
		}
	}
	modules := map[string]string{}
	for name, raw := range files {
		if !strings.HasSuffix(name, ".rego") {
			continue
		}
		pkg, ok := packagePath(raw)
		if !ok {
			return "", nil, errNeedsParse
		}
		if !bundle.RootPathsContain(roots, pkg) {
			return "", nil, fmt.Errorf("manifest roots %v do not permit package %s in module /%s", roots, strings.ReplaceAll(pkg, "/", "."), name)
		}
		modules[name] = string(raw)
	}
	return m.Revision, modules, nil
}

// packagePath reads the package of a Rego module from its first statement, as a slash-separated path
// ("kith/ext"). It reports false unless that statement is a single line "package a.b.c" of plain names,
// optionally followed by a comment.
func packagePath(src []byte) (string, bool) {
	for line := range strings.Lines(string(src)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		rest, ok := strings.CutPrefix(line, "package")
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '\t') {
			return "", false
		}
		rest, _, _ = strings.Cut(rest, "#")
		segs := strings.Split(strings.TrimSpace(rest), ".")
		for _, seg := range segs {
			if !isName(seg) {
				return "", false
			}
		}
		return strings.Join(segs, "/"), true
	}
	return "", false
}

// isName reports whether s is a plain Rego name: a letter or underscore, then letters, digits or
// underscores.
func isName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		letter := c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
		if !letter && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// readSignedParsed verifies a signed bundle with OPA's bundle reader, which parses every module.
func readSignedParsed(data []byte, vc *bundle.VerificationConfig) (string, map[string]string, error) {
	b, err := bundle.NewReader(bytes.NewReader(data)).WithBundleVerificationConfig(vc).Read()
	if err != nil {
		return "", nil, fmt.Errorf("verify policy bundle: %w", err)
	}
	return b.Manifest.Revision, sources(b), nil
}

// MarshalPublicKey encodes a bundle verification key as PEM (PKIX).
func MarshalPublicKey(pub *ecdsa.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshal policy verification key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}
