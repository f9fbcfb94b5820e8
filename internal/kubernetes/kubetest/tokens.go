package kubetest

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

// ResignToken decodes a service-account token the API server issued, lets edit change its claims, and
// signs it again with the API server's own service-account key and key ID: a token the API server
// would have issued with those claims, such as one that has already expired (TokenRequest refuses
// lifetimes under ten minutes).
func (c *Cluster) ResignToken(tb testing.TB, token string, edit func(claims map[string]any)) string {
	tb.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		tb.Fatalf("token has %d parts, want 3", len(parts))
	}
	var header, claims map[string]any
	for i, v := range []*map[string]any{&header, &claims} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			tb.Fatal(err)
		}
		if err := json.Unmarshal(raw, v); err != nil {
			tb.Fatal(err)
		}
	}
	edit(claims)
	pemKey, err := os.ReadFile(c.ServiceAccountSigningKeyFile())
	if err != nil {
		tb.Fatal(err)
	}
	block, _ := pem.Decode(pemKey)
	if block == nil {
		tb.Fatalf("%s holds no PEM block", c.ServiceAccountSigningKeyFile())
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	alg, _ := header["alg"].(string)
	opts := &jose.SignerOptions{ExtraHeaders: map[jose.HeaderKey]any{}}
	if kid, ok := header["kid"].(string); ok {
		opts.ExtraHeaders["kid"] = kid
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(alg), Key: key}, opts)
	if err != nil {
		tb.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		tb.Fatal(err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		tb.Fatal(err)
	}
	out, err := obj.CompactSerialize()
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// UserKubeConfigFile writes a kubeconfig that authenticates as user name in groups and returns its path.
func (c *Cluster) UserKubeConfigFile(tb testing.TB, name string, groups ...string) string {
	tb.Helper()
	u, err := c.Env.AddUser(envtestUser(name, groups), nil)
	if err != nil {
		tb.Fatalf("add user %s: %v", name, err)
	}
	kc, err := u.KubeConfig()
	if err != nil {
		tb.Fatal(err)
	}
	p := filepath.Join(tb.TempDir(), name+".kubeconfig")
	if err := os.WriteFile(p, kc, 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}
