package config

import (
	"strings"
	"testing"
)

func TestServerJWTIssuer(t *testing.T) {
	for _, tt := range []struct {
		issuer, wantErr string
	}{
		{"", ""},
		{"https://kith.example.org", ""},
		{"http://127.0.0.1:8080", ""},
		{"kith.example.org", "ca.jwt_issuer"},
		{"https://kith.example.org/?x=1", "ca.jwt_issuer"},
		{"ftp://kith.example.org", "ca.jwt_issuer"},
		{"https://kith.example.org/", "ca.jwt_issuer"},
		{"https://kith.example.org/oidc", ""},
	} {
		env := map[string]string{"KITH_CA_JWT_ISSUER": tt.issuer, "KITH_DATA_DIR": t.TempDir()}
		cfg, err := LoadServer("", func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		if err == nil {
			err = cfg.Finish()
		}
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%q: %v", tt.issuer, err)
		case tt.wantErr == "" && cfg.CA.JWTIssuer != tt.issuer:
			t.Errorf("%q: loaded %q", tt.issuer, cfg.CA.JWTIssuer)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%q: error %v, want one naming %s", tt.issuer, err, tt.wantErr)
		}
	}
}
