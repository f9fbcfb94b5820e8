package cli

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

// readBundleFile reads a bundle file given on the command line (- reads stdin).
func (e *env) readBundleFile(cmd *cobra.Command, flag, path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	if path == "-" {
		return io.ReadAll(io.LimitReader(cmd.InOrStdin(), 1<<20+1))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usage(fmt.Errorf("--%s: %w", flag, err))
	}
	return b, nil
}

func bundleRow(b *adminv1.FederatedBundle) []string {
	return []string{b.GetTrustDomain(), b.GetSource(), fmt.Sprint(len(b.GetX509Authorities())), fmt.Sprint(len(b.GetJwtKeyIds())),
		fmt.Sprint(b.GetSequenceNumber()), fmtSeconds(b.GetRefreshHintSeconds()), fmtTime(b.GetUpdatedAt())}
}

var bundleHeader = []string{"TRUST DOMAIN", "SOURCE", "X509 ROOTS", "JWT KEYS", "SEQUENCE", "REFRESH HINT", "UPDATED"}

// federatedBundleCommands are kith bundle set, list and delete: other trust domains' bundles kept by hand.
func (e *env) federatedBundleCommands() []*cobra.Command {
	var file string
	set := &cobra.Command{
		Use:   "set TRUST-DOMAIN --file FILE|-",
		Short: "Trust another trust domain's bundle (SPIFFE bundle JSON or PEM roots), kept by hand",
		Args:  exactArgs(1, "the trust domain, e.g. partner.org"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return usage(fmt.Errorf("--file is required: the bundle (kith bundle show --format spiffe on the other server, or PEM roots; - reads stdin)"))
			}
			doc, err := e.readBundleFile(cmd, "file", file)
			if err != nil {
				return err
			}
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.SetFederatedBundle, &adminv1.SetFederatedBundleRequest{TrustDomain: args[0], SpiffeBundle: doc})
			if err != nil {
				return err
			}
			return e.print(resp.GetBundle(), func() { e.table(bundleHeader, [][]string{bundleRow(resp.GetBundle())}) })
		},
	}
	set.Flags().StringVar(&file, "file", "", "the bundle: SPIFFE bundle JSON or PEM certificates (- reads stdin)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the other trust domains' bundles this server trusts",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.ListFederatedBundles, &adminv1.ListFederatedBundlesRequest{})
			if err != nil {
				return err
			}
			return e.print(resp, func() {
				var rows [][]string
				for _, b := range resp.GetBundles() {
					rows = append(rows, bundleRow(b))
				}
				e.table(bundleHeader, rows)
			})
		},
	}
	del := &cobra.Command{
		Use:   "delete TRUST-DOMAIN",
		Short: "Stop trusting another trust domain's bundle",
		Args:  exactArgs(1, "the trust domain, e.g. partner.org"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.DeleteFederatedBundle, &adminv1.DeleteFederatedBundleRequest{TrustDomain: args[0]})
			if err != nil {
				return err
			}
			return e.print(resp.GetBundle(), func() { fmt.Fprintf(e.stdout, "deleted the bundle of %s\n", resp.GetBundle().GetTrustDomain()) })
		},
	}
	return []*cobra.Command{set, list, del}
}

type federationFlags struct {
	trustDomain, url, profile, endpointID, trustBundle string
}

func (f *federationFlags) bind(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.trustDomain, "trust-domain", "", "the other trust domain, e.g. partner.org")
	fl.StringVar(&f.url, "bundle-endpoint-url", "", "the https:// URL of its bundle endpoint")
	fl.StringVar(&f.profile, "profile", "https_spiffe", "https_spiffe (the endpoint presents an SVID of --endpoint-spiffe-id) or https_web (a Web PKI certificate)")
	fl.StringVar(&f.endpointID, "endpoint-spiffe-id", "", "https_spiffe: the SPIFFE ID the endpoint presents, e.g. spiffe://partner.org/kith/server")
	fl.StringVar(&f.trustBundle, "trust-bundle", "", "https_spiffe: the trust domain's first bundle (SPIFFE JSON or PEM), to check the endpoint the first time (- reads stdin)")
}

func (e *env) federationCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "federation", Short: "Federate with other trust domains: fetch their bundles from their bundle endpoints"}
	var cf federationFlags
	put := func(update bool) func(cmd *cobra.Command, _ []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			if cf.trustDomain == "" || cf.url == "" {
				return usage(fmt.Errorf("--trust-domain and --bundle-endpoint-url are required"))
			}
			doc, err := e.readBundleFile(cmd, "trust-bundle", cf.trustBundle)
			if err != nil {
				return err
			}
			f := &adminv1.Federation{TrustDomain: cf.trustDomain, BundleEndpointUrl: cf.url, Profile: cf.profile, EndpointSpiffeId: cf.endpointID}
			var out *adminv1.Federation
			if update {
				resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.UpdateFederation, &adminv1.UpdateFederationRequest{Federation: f, TrustBundle: doc})
				if err != nil {
					return err
				}
				out = resp.GetFederation()
			} else {
				resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.CreateFederation, &adminv1.CreateFederationRequest{Federation: f, TrustBundle: doc})
				if err != nil {
					return err
				}
				out = resp.GetFederation()
			}
			return e.print(out, func() { e.federationDetail(out) })
		}
	}
	create := &cobra.Command{
		Use:   "create --trust-domain TD --bundle-endpoint-url URL [--profile https_spiffe --endpoint-spiffe-id ID --trust-bundle FILE | --profile https_web]",
		Short: "Start federating with a trust domain: the server fetches its bundle now and then by its refresh hint",
		Args:  noArgs,
		RunE:  put(false),
	}
	cf.bind(create)
	update := &cobra.Command{
		Use:   "update --trust-domain TD --bundle-endpoint-url URL [--profile ...] [--trust-bundle FILE]",
		Short: "Change a federation relationship (every setting is given again)",
		Args:  noArgs,
		RunE:  put(true),
	}
	cf.bind(update)
	list := &cobra.Command{
		Use:   "list",
		Short: "List federation relationships with their last and next refresh and last error",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.ListFederations, &adminv1.ListFederationsRequest{})
			if err != nil {
				return err
			}
			return e.print(resp, func() {
				var rows [][]string
				for _, f := range resp.GetFederations() {
					rows = append(rows, []string{f.GetTrustDomain(), f.GetProfile(), f.GetBundleEndpointUrl(), fmtTime(f.GetLastRefresh()),
						fmtTime(f.GetNextRefresh()), orDash(f.GetLastError())})
				}
				e.table([]string{"TRUST DOMAIN", "PROFILE", "BUNDLE ENDPOINT", "LAST REFRESH", "NEXT REFRESH", "LAST ERROR"}, rows)
			})
		},
	}
	show := &cobra.Command{
		Use:   "show TRUST-DOMAIN",
		Short: "Show one federation relationship and the bundle in use",
		Args:  exactArgs(1, "the trust domain, e.g. partner.org"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.ListFederations, &adminv1.ListFederationsRequest{TrustDomain: args[0]})
			if err != nil {
				return err
			}
			f := resp.GetFederations()[0]
			return e.print(f, func() { e.federationDetail(f) })
		},
	}
	del := &cobra.Command{
		Use:   "delete TRUST-DOMAIN",
		Short: "Stop refreshing a trust domain's bundle (the last one stays trusted until kith bundle delete)",
		Args:  exactArgs(1, "the trust domain, e.g. partner.org"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.DeleteFederation, &adminv1.DeleteFederationRequest{TrustDomain: args[0]})
			if err != nil {
				return err
			}
			return e.print(resp.GetFederation(), func() {
				fmt.Fprintf(e.stdout, "deleted the federation with %s; its last bundle stays trusted until kith bundle delete %s\n", args[0], args[0])
			})
		},
	}
	cmd.AddCommand(create, list, show, update, del)
	return cmd
}

func (e *env) federationDetail(f *adminv1.Federation) {
	w := e.stdout
	fmt.Fprintf(w, "Trust domain:       %s\n", f.GetTrustDomain())
	fmt.Fprintf(w, "Bundle endpoint:    %s\n", f.GetBundleEndpointUrl())
	fmt.Fprintf(w, "Profile:            %s\n", f.GetProfile())
	fmt.Fprintf(w, "Endpoint SPIFFE ID: %s\n", orDash(f.GetEndpointSpiffeId()))
	fmt.Fprintf(w, "Last refresh:       %s\n", fmtTime(f.GetLastRefresh()))
	fmt.Fprintf(w, "Next refresh:       %s\n", fmtTime(f.GetNextRefresh()))
	fmt.Fprintf(w, "Last error:         %s\n", orDash(f.GetLastError()))
	if b := f.GetBundle(); b != nil {
		fmt.Fprintf(w, "Bundle:             %d X.509 roots, %d JWT keys, sequence %d, refresh hint %s (%s)\n",
			len(b.GetX509Authorities()), len(b.GetJwtKeyIds()), b.GetSequenceNumber(), fmtSeconds(b.GetRefreshHintSeconds()), strings.TrimSpace(b.GetSource()))
	} else {
		fmt.Fprintf(w, "Bundle:             -\n")
	}
}
