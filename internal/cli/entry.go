package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

type entryFlags struct {
	spiffeID      string
	parent        string
	nodeSelectors []string
	selectors     []string
	ttl           time.Duration
	jwtTTL        time.Duration
	dnsNames      []string
	labels        []string
	federatesWith []string
}

func (f *entryFlags) bind(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.spiffeID, "spiffe-id", "", "SPIFFE ID the workload receives, e.g. spiffe://example.org/ns/prod/sa/web")
	fl.StringVar(&f.parent, "parent", "", "SPIFFE ID of the agent that serves this entry")
	fl.StringSliceVar(&f.nodeSelectors, "node-selector", nil, "serve on every agent whose node has this selector, e.g. join_token:name:node1 (repeatable)")
	fl.StringSliceVar(&f.selectors, "selector", nil, "workload selector type:key:value, e.g. unix:uid:1000 (repeatable; all must match)")
	ttlVar(fl, &f.ttl, "ttl", "X.509-SVID lifetime (default: the server's svid.x509_ttl)")
	ttlVar(fl, &f.jwtTTL, "jwt-ttl", "JWT-SVID lifetime (default: the server's svid.jwt_ttl)")
	fl.StringSliceVar(&f.dnsNames, "dns-name", nil, "DNS SAN to add to the X.509-SVID (repeatable)")
	fl.StringSliceVar(&f.labels, "label", nil, "label key=value, e.g. env=dev (repeatable)")
	fl.StringSliceVar(&f.federatesWith, "federates-with", nil, "another trust domain whose bundle the workload also receives, e.g. partner.org (repeatable; see kith federation)")
}

func (f *entryFlags) proto() (*adminv1.Entry, error) {
	labels, err := parseLabels(f.labels)
	if err != nil {
		return nil, err
	}
	return &adminv1.Entry{
		SpiffeId: f.spiffeID, ParentId: f.parent, NodeSelectors: f.nodeSelectors, Selectors: f.selectors,
		X509TtlSeconds: int64(f.ttl / time.Second), JwtTtlSeconds: int64(f.jwtTTL / time.Second),
		DnsNames: f.dnsNames, Labels: labels, FederatesWith: f.federatesWith,
	}, nil
}

func (e *env) entryCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "entry", Short: "Manage registration entries: which workloads get which SPIFFE IDs"}

	var cf entryFlags
	var dataFile string
	create := &cobra.Command{
		Use:   "create --spiffe-id ID --selector type:key:value... [--parent ID | --node-selector type:key:value...] | --data FILE|-",
		Short: "Register a workload, or every entry of a JSON or YAML file in one transaction",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataFile != "" {
				for _, name := range []string{"spiffe-id", "parent", "node-selector", "selector", "ttl", "jwt-ttl", "dns-name", "label", "federates-with"} {
					if cmd.Flags().Changed(name) {
						return usage(fmt.Errorf("--data and --%s: the file says everything about its entries, give one or the other", name))
					}
				}
				return e.createEntriesFrom(cmd, dataFile)
			}
			pe, err := cf.proto()
			if err != nil {
				return err
			}
			if err := e.checkEntry(cmd.Context(), pe); err != nil {
				return err
			}
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.CreateEntry, &adminv1.CreateEntryRequest{Entry: pe})
			if err != nil {
				return err
			}
			e.warnExecutableOnly(resp.GetEntry().GetSelectors())
			return e.printEntry(resp.GetEntry())
		},
	}
	cf.bind(create)
	e.bindStrict(create)
	create.Flags().StringVar(&dataFile, "data", "", "create the entries of this JSON or YAML file (- reads stdin): a list of entries, or {entries: [...]} as kith entry list -o json prints; field names as in that output")

	var lf struct{ spiffeID, parent, source string }
	list := &cobra.Command{
		Use:   "list [--spiffe-id ID] [--parent ID] [--source k8s]",
		Short: "List entries",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, done, err := e.admin()
			if err != nil {
				return err
			}
			defer done()
			resp, err := listEntries(cmd.Context(), c, &adminv1.ListEntriesRequest{SpiffeId: lf.spiffeID, ParentId: lf.parent, Source: lf.source})
			if err != nil {
				return err
			}
			return e.print(resp, func() { e.entryTable(resp.GetEntries()) })
		},
	}
	list.Flags().StringVar(&lf.spiffeID, "spiffe-id", "", "only entries with this SPIFFE ID")
	list.Flags().StringVar(&lf.parent, "parent", "", "only entries parented to this agent")
	list.Flags().StringVar(&lf.source, "source", "", "only entries whose source starts with this: cli, or k8s (kept by the Kubernetes controller for KithIdentity resources)")

	show := &cobra.Command{
		Use:   "show ENTRY-ID|SPIFFE-ID|NAME",
		Short: "Show an entry by its ID, or the entries of a SPIFFE ID or registered short name",
		Args:  exactArgs(1, "ENTRY-ID, SPIFFE-ID or a registered short name (see kith entry list)"),
		RunE: e.withAdmin(func(cmd *cobra.Command, args []string, c adminv1.AdminServiceClient) error {
			ctx, arg := cmd.Context(), args[0]
			if !strings.HasPrefix(arg, "spiffe://") {
				resp, err := c.GetEntry(ctx, &adminv1.GetEntryRequest{Id: arg})
				if err == nil {
					return e.printEntryDetail(resp.GetEntry())
				}
				if status.Code(err) != codes.NotFound {
					return err
				}
			}
			id, err := resolveID(ctx, c, arg)
			if err != nil {
				return fmt.Errorf("entry %q not found, and it is not a registered identity (%v): see kith entry list", arg, err)
			}
			resp, err := listEntries(ctx, c, &adminv1.ListEntriesRequest{SpiffeId: id})
			if err != nil {
				return err
			}
			switch es := resp.GetEntries(); len(es) {
			case 0:
				return fmt.Errorf("no entry has the SPIFFE ID %s: see kith entry list", id)
			case 1:
				return e.printEntryDetail(es[0])
			default:
				return e.print(resp, func() {
					for i, pe := range es {
						if i > 0 {
							fmt.Fprintln(e.stdout)
						}
						e.entryDetailText(pe)
					}
				})
			}
		}),
	}

	var uf entryFlags
	update := &cobra.Command{
		Use:   "update ENTRY-ID [flags]",
		Short: "Change an entry; flags not given keep their value",
		Args:  exactArgs(1, "ENTRY-ID (see kith entry list)"),
		RunE: e.withAdmin(func(cmd *cobra.Command, args []string, c adminv1.AdminServiceClient) error {
			cur, err := c.GetEntry(cmd.Context(), &adminv1.GetEntryRequest{Id: args[0]})
			if err != nil {
				return err
			}
			pe := cur.GetEntry()
			fl := cmd.Flags()
			if fl.Changed("spiffe-id") {
				pe.SpiffeId = uf.spiffeID
			}
			if fl.Changed("parent") {
				pe.ParentId, pe.NodeSelectors = uf.parent, nil
			}
			if fl.Changed("node-selector") {
				pe.NodeSelectors, pe.ParentId = uf.nodeSelectors, ""
			}
			if fl.Changed("selector") {
				pe.Selectors = uf.selectors
			}
			if fl.Changed("ttl") {
				pe.X509TtlSeconds = int64(uf.ttl / time.Second)
			}
			if fl.Changed("jwt-ttl") {
				pe.JwtTtlSeconds = int64(uf.jwtTTL / time.Second)
			}
			if fl.Changed("dns-name") {
				pe.DnsNames = uf.dnsNames
			}
			if fl.Changed("federates-with") {
				pe.FederatesWith = uf.federatesWith
			}
			if fl.Changed("label") {
				if pe.Labels, err = parseLabels(uf.labels); err != nil {
					return err
				}
			}
			e.warnExecutableOnly(pe.GetSelectors())
			if err := e.checkEntry(cmd.Context(), pe); err != nil {
				return err
			}
			resp, err := c.UpdateEntry(cmd.Context(), &adminv1.UpdateEntryRequest{Entry: pe})
			if err != nil {
				return err
			}
			return e.printEntry(resp.GetEntry())
		}),
	}
	uf.bind(update)
	e.bindStrict(update)

	del := &cobra.Command{
		Use:   "delete ENTRY-ID",
		Short: "Delete an entry; its workloads lose that identity at once",
		Args:  exactArgs(1, "ENTRY-ID (see kith entry list)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.DeleteEntry, &adminv1.DeleteEntryRequest{Id: args[0]})
			if err != nil {
				return err
			}
			return e.print(resp.GetEntry(), func() {
				fmt.Fprintf(e.stdout, "deleted entry %s (%s)\n", resp.GetEntry().GetId(), resp.GetEntry().GetSpiffeId())
			})
		},
	}
	cmd.AddCommand(create, list, show, update, del)
	return cmd
}

// printEntry prints one entry as a one-row table, or as JSON.
func (e *env) printEntry(pe *adminv1.Entry) error {
	return e.print(pe, func() { e.entryTable([]*adminv1.Entry{pe}) })
}

func (e *env) entryTable(es []*adminv1.Entry) {
	rows := make([][]string, 0, len(es))
	for _, pe := range es {
		where := pe.GetParentId()
		if where == "" {
			where = "node:" + strings.Join(pe.GetNodeSelectors(), ",")
		}
		rows = append(rows, []string{pe.GetId(), pe.GetSpiffeId(), where, strings.Join(pe.GetSelectors(), ","), fmtSeconds(pe.GetX509TtlSeconds()), fmtLabels(pe.GetLabels())})
	}
	e.table([]string{"ID", "SPIFFE ID", "PARENT", "SELECTORS", "TTL", "LABELS"}, rows)
}

func (e *env) printEntryDetail(pe *adminv1.Entry) error {
	return e.print(pe, func() { e.entryDetailText(pe) })
}

func (e *env) entryDetailText(pe *adminv1.Entry) {
	w := e.stdout
	fmt.Fprintf(w, "ID:             %s\n", pe.GetId())
	fmt.Fprintf(w, "SPIFFE ID:      %s\n", pe.GetSpiffeId())
	fmt.Fprintf(w, "Parent:         %s\n", orDash(pe.GetParentId()))
	fmt.Fprintf(w, "Node selectors: %s\n", orDash(strings.Join(pe.GetNodeSelectors(), ", ")))
	fmt.Fprintf(w, "Selectors:      %s\n", strings.Join(pe.GetSelectors(), ", "))
	fmt.Fprintf(w, "X.509 TTL:      %s\n", fmtSeconds(pe.GetX509TtlSeconds()))
	fmt.Fprintf(w, "JWT TTL:        %s\n", fmtSeconds(pe.GetJwtTtlSeconds()))
	fmt.Fprintf(w, "DNS names:      %s\n", orDash(strings.Join(pe.GetDnsNames(), ", ")))
	fmt.Fprintf(w, "Labels:         %s\n", fmtLabels(pe.GetLabels()))
	fmt.Fprintf(w, "Federates with: %s\n", orDash(strings.Join(pe.GetFederatesWith(), ", ")))
	fmt.Fprintf(w, "Created:        %s\n", fmtTime(pe.GetCreatedAt()))
	fmt.Fprintf(w, "Updated:        %s\n", fmtTime(pe.GetUpdatedAt()))
	fmt.Fprintf(w, "Revision:       %d\n", pe.GetRevision())
}

// exactArgs is cobra.ExactArgs with a message that says what to give.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usage(fmt.Errorf("%s takes %s (see %s --help)", cmd.CommandPath(), what, cmd.CommandPath()))
		}
		return nil
	}
}

// warnExecutableOnly warns about an entry that selects workloads by their executable alone: any local
// user who may run that file, or a process that executes it right after connecting, gets the identity.
func (e *env) warnExecutableOnly(selectors []string) {
	byExe, byUser := false, false
	for _, s := range selectors {
		switch {
		case strings.HasPrefix(s, "unix:path:"), strings.HasPrefix(s, "unix:sha256:"):
			byExe = true
		case strings.HasPrefix(s, "unix:uid:"), strings.HasPrefix(s, "unix:gid:"), strings.HasPrefix(s, "unix:user:"), strings.HasPrefix(s, "unix:group:"):
			byUser = true
		}
	}
	if byExe && !byUser {
		fmt.Fprintln(e.stderr, "kith: warning: this entry selects an executable but no user: any local user who can run that file gets "+
			"the identity. Add --selector unix:uid:N (or unix:gid:N) of the workload's own user; see docs/attestors/unix.md.")
	}
}

// createEntriesFrom creates every entry of a JSON or YAML file in one transaction: a list of entries, or
// an object with "entries" (what `kith entry list -o json` prints, so a listing can be loaded elsewhere).
// IDs and times in the file are ignored; the server assigns them.
func (e *env) createEntriesFrom(cmd *cobra.Command, file string) error {
	var data []byte
	var err error
	if file == "-" {
		data, err = io.ReadAll(cmd.InOrStdin())
	} else {
		data, err = os.ReadFile(file)
	}
	if err != nil {
		return fmt.Errorf("read --data: %w", err)
	}
	entries, err := parseEntries(data)
	if err != nil {
		return fmt.Errorf("--data %s: %w", file, err)
	}
	if len(entries) == 0 {
		return fmt.Errorf("--data %s holds no entries", file)
	}
	parents := map[string]bool{}
	for i, pe := range entries {
		pe.Id, pe.CreatedAt, pe.UpdatedAt, pe.Revision = "", nil, nil, 0
		// The cautions of kith entry create, per entry (refusals with --strict), before anything is stored.
		if err := e.checkEntryIn(cmd.Context(), pe, fmt.Sprintf("--data %s: entries[%d]: ", file, i), parents); err != nil {
			return err
		}
	}
	resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.BatchCreateEntries, &adminv1.BatchCreateEntriesRequest{Entries: entries})
	if err != nil {
		return err
	}
	for _, pe := range resp.GetEntries() {
		e.warnExecutableOnly(pe.GetSelectors())
	}
	return e.print(resp, func() { e.entryTable(resp.GetEntries()) })
}

// parseEntries reads entries from JSON or YAML (YAML is read as JSON's superset): a list, or {entries: [...]}.
func parseEntries(data []byte) ([]*adminv1.Entry, error) {
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("neither JSON nor YAML: %w", err)
	}
	if list, ok := doc.([]any); ok {
		doc = map[string]any{"entries": list}
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("want a list of entries or an object with \"entries\", not %T", doc)
	}
	if _, ok := obj["entries"]; !ok {
		return nil, fmt.Errorf("an object with \"entries\" (a list) is wanted; the keys here are %s", strings.Join(slices.Sorted(maps.Keys(obj)), ", "))
	}
	js, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	var list adminv1.ListEntriesResponse
	if err := protojson.Unmarshal(js, &list); err != nil {
		return nil, fmt.Errorf("%w (fields as kith entry list -o json prints them: spiffe_id, parent_id, node_selectors, selectors, x509_ttl_seconds, jwt_ttl_seconds, dns_names, labels)", err)
	}
	return list.GetEntries(), nil
}
