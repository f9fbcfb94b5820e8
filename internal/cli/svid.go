package cli

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/ca"
)

func (e *env) svidCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "svid", Short: "SVIDs: mint them directly (administrators), fetch this process's own from the agent, verify them"}
	mint := &cobra.Command{Use: "mint", Short: "Mint an X.509-SVID or a JWT-SVID"}

	var x struct {
		id, outCert, outKey string
		ttl                 time.Duration
		dns                 []string
	}
	x509cmd := &cobra.Command{
		Use:   "x509 --spiffe-id ID [--ttl D] [--dns-name N]... --out-key FILE|- [--out-cert FILE]",
		Short: "Mint an X.509-SVID; the key is made here and never sent",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if x.id == "" {
				return fmt.Errorf("--spiffe-id is required, e.g. --spiffe-id spiffe://example.org/app")
			}
			if x.outKey == "" {
				return usage(fmt.Errorf("--out-key is required: give a file to write the private key to (mode 0600), or --out-key - to print it on purpose"))
			}
			if x.outCert == "-" {
				x.outCert = ""
			}
			// An unparseable ID is sent as is: the server's error says what is wrong with it.
			id, _ := spiffeid.FromString(x.id)
			key, csr, err := ca.NewKeyAndCSR(id)
			if err != nil {
				return err
			}
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.MintX509SVID, &adminv1.MintX509SVIDRequest{SpiffeId: x.id, Csr: csr, TtlSeconds: int64(x.ttl / time.Second), DnsNames: x.dns})
			if err != nil {
				return err
			}
			keyDER, err := x509.MarshalPKCS8PrivateKey(key)
			if err != nil {
				return fmt.Errorf("encode key: %w", err)
			}
			var certPEM []byte
			for _, der := range resp.GetCertChain() {
				certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
			}
			keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
			out := map[string]any{"spiffe_id": x.id, "expires_at": fmtTime(resp.GetExpiresAt())}
			var wrote []string
			if x.outCert != "" {
				if err := os.WriteFile(x.outCert, certPEM, 0o644); err != nil {
					return fmt.Errorf("write --out-cert: %w", err)
				}
				out["cert_file"], certPEM = x.outCert, nil
				wrote = append(wrote, x.outCert)
			} else {
				out["cert_chain_pem"] = string(certPEM)
			}
			if x.outKey != "-" {
				if err := writePrivate(x.outKey, keyPEM); err != nil {
					return fmt.Errorf("write --out-key: %w", err)
				}
				out["key_file"], keyPEM = x.outKey, nil
				wrote = append(wrote, x.outKey)
			} else {
				out["key_pem"] = string(keyPEM)
			}
			return e.print(out, func() {
				if len(wrote) > 0 {
					fmt.Fprintf(e.stdout, "X.509-SVID for %s, expires %s\nwrote %s\n", x.id, fmtTime(resp.GetExpiresAt()), strings.Join(wrote, " and "))
				}
				fmt.Fprintf(e.stdout, "%s%s", certPEM, keyPEM)
			})
		},
	}
	x509cmd.Flags().StringVar(&x.id, "spiffe-id", "", "SPIFFE ID to put in the certificate")
	ttlVar(x509cmd.Flags(), &x.ttl, "ttl", "lifetime (default: the server's svid.x509_ttl)")
	x509cmd.Flags().StringSliceVar(&x.dns, "dns-name", nil, "DNS SAN (repeatable)")
	x509cmd.Flags().StringVar(&x.outCert, "out-cert", "", "write the certificate chain (PEM) here (default: print it)")
	x509cmd.Flags().StringVar(&x.outKey, "out-key", "", "write the private key (PEM, mode 0600) here; - prints it (required)")

	var j struct {
		id       string
		audience []string
		ttl      time.Duration
	}
	jwtcmd := &cobra.Command{
		Use:   "jwt --spiffe-id ID --audience AUD... [--ttl D]",
		Short: "Mint a JWT-SVID",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if j.id == "" {
				return fmt.Errorf("--spiffe-id is required, e.g. --spiffe-id spiffe://example.org/app")
			}
			if len(j.audience) == 0 {
				return fmt.Errorf("--audience is required: name the service that will accept the token")
			}
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.MintJWTSVID, &adminv1.MintJWTSVIDRequest{SpiffeId: j.id, Audience: j.audience, TtlSeconds: int64(j.ttl / time.Second)})
			if err != nil {
				return err
			}
			return e.print(resp, func() {
				fmt.Fprintln(e.stdout, resp.GetToken())
			})
		},
	}
	jwtcmd.Flags().StringVar(&j.id, "spiffe-id", "", "SPIFFE ID (the token's sub)")
	jwtcmd.Flags().StringSliceVar(&j.audience, "audience", nil, "audience (repeatable)")
	ttlVar(jwtcmd.Flags(), &j.ttl, "ttl", "lifetime (default: the server's svid.jwt_ttl)")

	mint.AddCommand(x509cmd, jwtcmd)
	cmd.AddCommand(mint, e.svidFetchCommand(), e.svidVerifyCommand())
	return cmd
}

// writePrivate writes data to path with mode 0600, atomically.
func writePrivate(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
