package server

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/upstream/disk"
	"github.com/kithid/kith/ca/upstream/stepca"
	"github.com/kithid/kith/ca/upstream/vault"
	"github.com/kithid/kith/internal/config"
)

// newUpstream builds the upstream authority ca.upstream configures and names it for `kith ca show`; nil
// when the CA is self-signed.
func newUpstream(ctx context.Context, c config.Upstream, now func() time.Time, log *slog.Logger) (ca.UpstreamAuthority, string, error) {
	switch c.Kind() {
	case "disk":
		d := c.Disk
		up, err := disk.New(disk.Config{CertFile: d.CertFile, KeyFile: d.KeyFile, ChainFile: d.ChainFile, RootsFile: d.RootsFile, Now: now})
		if err != nil {
			return nil, "", fmt.Errorf("ca.upstream.disk: %w", err)
		}
		return up, "disk " + d.CertFile, nil
	case "step":
		st := c.Step
		up, err := stepca.New(ctx, stepca.Config{
			URL: st.URL, RootFile: st.RootFile, Fingerprint: st.Fingerprint, Provisioner: st.Provisioner,
			PasswordFile: st.PasswordFile, KeyFile: st.KeyFile, X5CCertFile: st.X5CCertFile, X5CKeyFile: st.X5CKeyFile, Logger: log,
		})
		if err != nil {
			return nil, "", fmt.Errorf("ca.upstream.step: %w", err)
		}
		return up, "step " + st.URL + " provisioner " + st.Provisioner, nil
	case "vault":
		v := c.Vault
		up, err := vault.New(vault.Config{
			Address: v.Address, Mount: v.Mount, Issuer: v.Issuer, Namespace: v.Namespace, CACertFile: v.CACertFile,
			TLSServerName: v.TLSServerName, TokenFile: v.TokenFile,
			AppRole:    vault.AppRole{Mount: v.AppRoleMount, RoleID: v.AppRoleRoleID, SecretIDFile: v.AppRoleSecretIDFile},
			Kubernetes: vault.Kubernetes{Mount: v.KubernetesMount, Role: v.KubernetesRole, TokenFile: v.KubernetesTokenFile},
			Now:        now, Logger: log,
		})
		if err != nil {
			return nil, "", fmt.Errorf("ca.upstream.vault: %w", err)
		}
		mount := v.Mount
		if mount == "" {
			mount = "pki"
		}
		return up, "vault " + v.Address + " " + mount, nil
	}
	return nil, "", nil
}
