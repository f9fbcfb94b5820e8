package cli

import (
	"bytes"
	"context"
	"fmt"
	"text/template"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/authz/meshimport"
	"github.com/kithid/kith/authz/meshimport/istio"
	"github.com/kithid/kith/authz/meshimport/smi"
	"github.com/kithid/kith/internal/grantpb"
	"github.com/kithid/kith/internal/kubernetes/apis/v1alpha1"
)

func init() {
	extraCommands = append(extraCommands, (*env).importCommand, (*env).exportCommand)
}

// meshFlags are the flags import (and export) share.
type meshFlags struct {
	dryRun, skipUnsupported bool
	aliases                 []string
	rootNamespace           string
	template                string
}

func (f *meshFlags) bind(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.dryRun, "dry-run", false, "print the grants and deny rules that would be added, changed and removed, and change nothing")
	cmd.Flags().BoolVar(&f.skipUnsupported, "skip-unsupported", false, "skip (and list) the rules Kith cannot express instead of refusing the import")
	cmd.Flags().StringSliceVar(&f.aliases, "trust-domain-alias", []string{"cluster.local"}, "a principal trust domain that means Kith's trust domain (repeatable)")
	cmd.Flags().StringVar(&f.rootNamespace, "root-namespace", "istio-system", "Istio's root namespace: its policies apply to every namespace")
	cmd.Flags().StringVar(&f.template, "spiffe-id-template", v1alpha1.DefaultSPIFFEIDTemplate, "the SPIFFE ID of a service account, as the Kubernetes integration makes it")
}

// options are the conversion options for the server's trust domain and registered workloads.
func (f *meshFlags) options(ctx context.Context, c adminv1.AdminServiceClient) (meshimport.Options, error) {
	info, err := c.GetServerInfo(ctx, &adminv1.GetServerInfoRequest{})
	if err != nil {
		return meshimport.Options{}, err
	}
	td, err := spiffeid.TrustDomainFromString(info.GetTrustDomain())
	if err != nil {
		return meshimport.Options{}, fmt.Errorf("the server's trust domain %q: %w", info.GetTrustDomain(), err)
	}
	tmpl, err := template.New("spiffe-id").Option("missingkey=error").Parse(f.template)
	if err != nil {
		return meshimport.Options{}, usage(fmt.Errorf("--spiffe-id-template %q: %w", f.template, err))
	}
	opts := meshimport.Options{TrustDomain: td, TrustDomainAliases: f.aliases, SkipUnsupported: f.skipUnsupported, RootNamespace: f.rootNamespace,
		ServiceAccountID: func(ns, sa string) (string, error) {
			var b bytes.Buffer
			err := tmpl.Execute(&b, v1alpha1.TemplateData{TrustDomain: td.Name(), Namespace: ns, ServiceAccount: sa})
			return b.String(), err
		}}
	entries, err := listEntries(ctx, c, &adminv1.ListEntriesRequest{})
	if err != nil {
		return meshimport.Options{}, err
	}
	for _, en := range entries.GetEntries() {
		opts.Workloads = append(opts.Workloads, meshimport.WorkloadOf(en.GetSpiffeId(), en.GetLabels()))
	}
	return opts, nil
}

func (e *env) importCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "import", Short: "Import a service mesh's access policies as grants and deny rules (SMI, Istio)"}
	for _, kind := range []string{"smi", "istio"} {
		var f meshFlags
		short := "Import SMI TrafficTargets (v1alpha1–v1alpha4) with their HTTPRouteGroups, TCPRoutes and IdentityBindings"
		if kind == "istio" {
			short = "Import Istio AuthorizationPolicies (security.istio.io v1, v1beta1): ALLOW as grants, DENY as deny rules"
		}
		sub := &cobra.Command{
			Use:   kind + " FILE|DIR|- [--dry-run] [--skip-unsupported] [--trust-domain-alias TD]...",
			Short: short,
			Long: short + ". Files are YAML (several documents) or JSON; a directory is read with its sub-directories. " +
				"The import replaces every grant of the " + kind + ": source in one transaction: a policy left out is revoked.",
			Args: exactArgs(1, "FILE, DIR or - (standard input)"),
			RunE: e.withAdmin(func(cmd *cobra.Command, args []string, c adminv1.AdminServiceClient) error {
				objs, err := meshimport.ReadPath(args[0], cmd.InOrStdin())
				if err != nil {
					return err
				}
				opts, err := f.options(cmd.Context(), c)
				if err != nil {
					return err
				}
				var res *meshimport.Result
				switch kind {
				case "smi":
					p, err := smi.Parse(objs)
					if err != nil {
						return err
					}
					if res, err = smi.Convert(p, opts); err != nil {
						return err
					}
				case "istio":
					ps, ignored, err := istio.Parse(objs)
					if err != nil {
						return err
					}
					if res, err = istio.Convert(ps, opts); err != nil {
						return err
					}
					for _, ig := range ignored {
						res.Skipped = append(res.Skipped, ig+": not an AuthorizationPolicy")
					}
				}
				req := &adminv1.ImportGrantsRequest{Source: kind + ":", DryRun: f.dryRun}
				for _, g := range res.Grants {
					req.Grants = append(req.Grants, grantpb.ToAdmin(g))
				}
				resp, err := c.ImportGrants(cmd.Context(), req)
				if err != nil {
					return err
				}
				out := map[string]any{"objects": nonNil(res.Objects), "skipped": nonNil(res.Skipped), "added": resp.GetAdded(), "changed": resp.GetChanged(),
					"removed": resp.GetRemoved(), "revision": resp.GetRevision(), "dry_run": f.dryRun}
				return e.print(out, func() { e.printImport(kind, res, resp, f.dryRun) })
			}),
		}
		f.bind(sub)
		cmd.AddCommand(sub)
	}
	return cmd
}

func (e *env) printImport(kind string, res *meshimport.Result, resp *adminv1.ImportGrantsResponse, dry bool) {
	w := e.stdout
	for _, o := range res.Objects {
		fmt.Fprintln(w, o)
	}
	for _, s := range res.Skipped {
		fmt.Fprintln(w, "note:", s)
	}
	line := func(mark string, g *adminv1.Grant) {
		what := "grant"
		if g.GetDeny() {
			what = "deny"
		}
		fmt.Fprintf(w, "%s %s %s %s → %s %s %s (%s, %s)\n", mark, what, g.GetId(), g.GetCaller(), g.GetTarget(), orAny(g.GetMethods()), pathsOf(g), g.GetSource(), orDash(g.GetReason()))
	}
	for _, g := range resp.GetAdded() {
		line("+", g)
	}
	for _, g := range resp.GetChanged() {
		line("~", g)
	}
	for _, g := range resp.GetRemoved() {
		line("-", g)
	}
	n := len(resp.GetAdded()) + len(resp.GetChanged()) + len(resp.GetRemoved())
	summary := fmt.Sprintf("%d added, %d changed, %d removed", len(resp.GetAdded()), len(resp.GetChanged()), len(resp.GetRemoved()))
	switch {
	case dry:
		fmt.Fprintf(w, "dry run: %s; nothing changed\n", summary)
	case n == 0:
		fmt.Fprintf(w, "%s: %d grants and deny rules, already in force; nothing changed\n", kind, len(res.Grants))
	default:
		fmt.Fprintf(w, "%s: %s; in force from revision %d\n", kind, summary, resp.GetRevision())
	}
}

func (e *env) exportCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "export", Short: "Write grants as a service mesh's access policies (SMI, Istio), listing what they cannot express"}
	for _, kind := range []string{"smi", "istio"} {
		var f meshFlags
		var source string
		short := "Write grants as SMI v1alpha3 TrafficTargets with HTTPRouteGroups and TCPRoutes"
		if kind == "istio" {
			short = "Write grants and deny rules as Istio AuthorizationPolicies (security.istio.io/v1)"
		}
		sub := &cobra.Command{
			Use:   kind + " [--source PREFIX]",
			Short: short,
			Long:  short + ". What cannot be expressed is listed as comments (# not exported: ...) before the YAML documents.",
			Args:  noArgs,
			RunE: e.withAdmin(func(cmd *cobra.Command, _ []string, c adminv1.AdminServiceClient) error {
				opts, err := f.options(cmd.Context(), c)
				if err != nil {
					return err
				}
				resp, err := listGrants(cmd.Context(), c, &adminv1.ListGrantsRequest{Source: source})
				if err != nil {
					return err
				}
				var gs []grant.Grant
				for _, pg := range resp.GetGrants() {
					if !pg.GetExpired() {
						gs = append(gs, grantpb.FromAdmin(pg))
					}
				}
				var x *meshimport.Export
				if kind == "smi" {
					x, err = smi.Export(gs, opts)
				} else {
					x, err = istio.Export(gs, opts)
				}
				if err != nil {
					return err
				}
				return meshimport.WriteYAML(e.stdout, x)
			}),
		}
		f.bind(sub)
		sub.Flags().StringVar(&source, "source", "", "only grants of this source, or of the sources it begins when it ends in : or / (smi:, istio:prod/)")
		for _, name := range []string{"dry-run", "skip-unsupported"} {
			_ = sub.Flags().MarkHidden(name)
		}
		cmd.AddCommand(sub)
	}
	return cmd
}
