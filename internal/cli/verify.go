package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.step.sm/crypto/pemutil"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

// svidVerifyCommand is `kith svid verify`.
func (e *env) svidVerifyCommand() *cobra.Command {
	var certFile, jwtToken, bundleFile string
	var audience []string
	cmd := &cobra.Command{
		Use:   "verify (--cert CHAIN.pem | --jwt TOKEN --audience AUD) [--bundle FILE]",
		Short: "Verify an X.509-SVID chain or a JWT-SVID against the trust bundle (the server's, or a SPIFFE bundle file)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (certFile == "") == (jwtToken == "") {
				return fmt.Errorf("give exactly one of --cert or --jwt")
			}
			if certFile != "" {
				data, err := os.ReadFile(certFile)
				if err != nil {
					return fmt.Errorf("read --cert: %w", err)
				}
				td, err := chainTrustDomain(data)
				if err != nil {
					return err
				}
				bundle, err := e.loadBundle(cmd.Context(), bundleFile, td)
				if err != nil {
					return err
				}
				certs, _ := pemutil.ParseCertificateBundle(data)
				id, _, err := x509svid.Verify(certs, bundle)
				if err != nil {
					return &exitError{code: 1, err: fmt.Errorf("x509-svid does not verify: %w", err)}
				}
				exp := certs[0].NotAfter.UTC().Format(time.RFC3339)
				return e.print(map[string]any{"valid": true, "spiffe_id": id.String(), "expires_at": exp}, func() {
					fmt.Fprintf(e.stdout, "valid X.509-SVID for %s, expires %s\n", id, exp)
				})
			}
			if len(audience) == 0 {
				return fmt.Errorf("--audience is required with --jwt")
			}
			jwtToken = strings.TrimSpace(jwtToken)
			insecure, err := jwtsvid.ParseInsecure(jwtToken, audience)
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("jwt-svid does not validate: %w", err)}
			}
			bundle, err := e.loadBundle(cmd.Context(), bundleFile, insecure.ID.TrustDomain())
			if err != nil {
				return err
			}
			svid, err := jwtsvid.ParseAndValidate(jwtToken, bundle, audience)
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("jwt-svid does not validate: %w", err)}
			}
			return e.print(map[string]any{"valid": true, "spiffe_id": svid.ID.String(), "audience": svid.Audience, "expires_at": svid.Expiry.UTC().Format(time.RFC3339)}, func() {
				fmt.Fprintf(e.stdout, "valid JWT-SVID for %s, audience %s, expires %s\n", svid.ID, strings.Join(svid.Audience, ","), svid.Expiry.UTC().Format(time.RFC3339))
			})
		},
	}
	cmd.Flags().StringVar(&certFile, "cert", "", "PEM file with the certificate chain, leaf first")
	cmd.Flags().StringVar(&jwtToken, "jwt", "", "the JWT-SVID")
	cmd.Flags().StringSliceVar(&audience, "audience", nil, "audience the token must carry")
	cmd.Flags().StringVar(&bundleFile, "bundle", "", "trust bundle file: PEM roots or SPIFFE bundle JSON (default: fetch from the server)")
	return cmd
}

// chainTrustDomain reads the trust domain from the leaf's SPIFFE ID, to pick the bundle to verify against.
func chainTrustDomain(pemData []byte) (spiffeid.TrustDomain, error) {
	certs, err := pemutil.ParseCertificateBundle(pemData)
	if err != nil || len(certs) == 0 {
		return spiffeid.TrustDomain{}, fmt.Errorf("--cert holds no PEM certificates")
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("--cert leaf is not an X.509-SVID: %w", err)
	}
	return id.TrustDomain(), nil
}

// loadBundle reads td's bundle from a SPIFFE bundle file, or fetches the server's over the admin socket.
func (e *env) loadBundle(ctx context.Context, file string, td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read --bundle: %w", err)
		}
		if bytes.Contains(data, []byte("-----BEGIN")) {
			// PEM roots, as `kith bundle show` prints them: X.509 only.
			roots, err := pemutil.ParseCertificateBundle(data)
			if err != nil || len(roots) == 0 {
				return nil, fmt.Errorf("--bundle %s holds PEM but no certificates (%v): give PEM roots or a SPIFFE bundle (kith bundle show --format spiffe)", file, err)
			}
			return spiffebundle.FromX509Authorities(td, roots), nil
		}
		b, err := spiffebundle.Parse(td, data)
		if err != nil {
			return nil, fmt.Errorf("--bundle %s is neither PEM roots nor a SPIFFE bundle (%v); get one with kith bundle show (PEM) or kith bundle show --format spiffe", file, err)
		}
		return b, nil
	}
	resp, err := call(ctx, e, adminv1.AdminServiceClient.GetBundle, &adminv1.GetBundleRequest{})
	if err != nil {
		return nil, err
	}
	if resp.GetTrustDomain() != td.Name() {
		return nil, fmt.Errorf("the SVID is from trust domain %q but the server's is %q: pass that domain's bundle with --bundle", td.Name(), resp.GetTrustDomain())
	}
	return spiffebundle.Parse(td, resp.GetSpiffeBundle())
}
