package cli

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

func init() {
	extraCommands = append(extraCommands, (*env).grantCommand, (*env).revokeCommand, (*env).grantsCommand,
		(*env).whoCommand, (*env).graphCommand, (*env).targetCommand, (*env).canCommand)
}

// resolveID turns a name into a SPIFFE ID: a full spiffe:// ID or prefix is kept; a short name such as
// "payments" must be the last path segment (or the whole path) of exactly one registered SPIFFE ID. The
// server finds the entries by name with an index; it never lists them all.
func resolveID(ctx context.Context, c adminv1.AdminServiceClient, arg string) (string, error) {
	if strings.HasPrefix(arg, "spiffe://") {
		return arg, nil
	}
	if arg == "" || strings.HasPrefix(arg, "/") || strings.HasSuffix(arg, "/") || strings.Contains(arg, "//") {
		return "", fmt.Errorf("%q is not a name: give a short name such as payments or sa/payments, or a full SPIFFE ID (spiffe://...)", arg)
	}
	resp, err := listEntries(ctx, c, &adminv1.ListEntriesRequest{Name: arg})
	if err != nil {
		return "", err
	}
	seen := map[string]bool{}
	var matches []string
	for _, e := range resp.GetEntries() {
		if id := e.GetSpiffeId(); !seen[id] {
			seen[id] = true
			matches = append(matches, id)
		}
	}
	switch len(matches) {
	case 1:
		return matches[0], nil
	case 0:
		return "", fmt.Errorf("no registered identity is named %q: give a full SPIFFE ID (spiffe://...)", arg)
	default:
		sort.Strings(matches)
		return "", fmt.Errorf("%q is ambiguous (%s): give the full SPIFFE ID", arg, strings.Join(matches, ", "))
	}
}

func (e *env) grantCommand() *cobra.Command {
	var methods, paths, pathRegex, headers, notMethods, notPaths []string
	var ports []uint
	var deny bool
	var forDur, wait time.Duration
	var until, reason string
	cmd := &cobra.Command{
		Use:   "grant CALLER TARGET [--method GET]... [--path /api/*]... [--path-regex RE]... [--header NAME=RE]... [--port N]... [--deny] [--for 8h | --until TIME] [--reason TEXT] [--wait[=30s]]",
		Short: "Let CALLER call TARGET (SPIFFE IDs, prefixes ending in /*, or registered short names); with --deny, forbid it whatever the grants say",
		Args:  exactArgs(2, "CALLER and TARGET"),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			forGiven := cmd.Flags().Changed("for")
			switch {
			case forGiven && until != "":
				return usage(fmt.Errorf("give --for or --until, not both"))
			case forGiven && forDur <= 0:
				return usage(fmt.Errorf("--for %s: the grant must last a positive time, e.g. --for 8h or --for 2d (leave --for out for a grant that does not expire)", forDur))
			}
			return nil
		},
		RunE: e.withAdmin(func(cmd *cobra.Command, args []string, c adminv1.AdminServiceClient) error {
			caller, err := resolveID(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			target, err := resolveID(cmd.Context(), c, args[1])
			if err != nil {
				return err
			}
			if err := e.checkGrantEnds(cmd.Context(), c, caller, target); err != nil {
				return err
			}
			g := &adminv1.Grant{Caller: caller, Target: target, Methods: methods, Paths: paths, Reason: reason,
				PathRegex: pathRegex, NotMethods: notMethods, NotPaths: notPaths, Deny: deny}
			if g.Headers, err = headerFlags("--header", headers); err != nil {
				return usage(err)
			}
			for _, p := range ports {
				if p == 0 || p > 65535 {
					return usage(fmt.Errorf("--port %d: want 1 to 65535", p))
				}
				g.Ports = append(g.Ports, uint32(p))
			}
			switch {
			case forDur > 0:
				g.ExpiresAt = timestamppb.New(time.Now().Add(forDur))
			case until != "":
				t, err := time.Parse(time.RFC3339, until)
				if err != nil {
					return fmt.Errorf("--until %q: use RFC 3339, e.g. 2026-12-01T18:00:00Z", until)
				}
				g.ExpiresAt = timestamppb.New(t)
			}
			resp, err := c.CreateGrant(cmd.Context(), &adminv1.CreateGrantRequest{Grant: g})
			if err != nil {
				return err
			}
			if err := e.printGrant(resp.GetGrant()); err != nil {
				return err
			}
			return e.reportEnforcement(cmd.Context(), c, resp.GetRevision(), []string{resp.GetGrant().GetTarget()}, wait)
		}),
	}
	cmd.Flags().StringSliceVar(&methods, "method", nil, "HTTP method allowed (repeatable; gRPC is POST; default any)")
	cmd.Flags().StringSliceVar(&paths, "path", nil, "path allowed, glob such as /api/* or /pkg.Service/* (repeatable; default any)")
	cmd.Flags().StringArrayVar(&pathRegex, "path-regex", nil, "path allowed, RE2 anchored at the start of the path as SMI's pathRegex: /api/v[0-9]+ (repeatable)")
	cmd.Flags().StringArrayVar(&headers, "header", nil, "NAME=RE2: the request header must match, anchored at the start (repeatable; all must match)")
	cmd.Flags().UintSliceVar(&ports, "port", nil, "destination port allowed (repeatable; default any)")
	cmd.Flags().StringSliceVar(&notMethods, "not-method", nil, "method excepted (repeatable)")
	cmd.Flags().StringSliceVar(&notPaths, "not-path", nil, "path pattern excepted (repeatable)")
	cmd.Flags().BoolVar(&deny, "deny", false, "a deny rule: requests it matches are denied whatever the grants allow")
	durationVar(cmd.Flags(), &forDur, "for", 0, "grant expires after this long, e.g. 8h")
	bindWait(cmd, &wait)
	e.bindStrict(cmd)
	cmd.Flags().StringVar(&until, "until", "", "grant expires at this time (RFC 3339)")
	cmd.Flags().StringVar(&reason, "reason", "", "why (kept in the grant and the audit log)")
	return cmd
}

func (e *env) revokeCommand() *cobra.Command {
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "revoke GRANT-ID | revoke CALLER TARGET [--wait[=30s]]",
		Short: "Remove a grant (by ID, or every CLI grant from CALLER to TARGET)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 && len(args) != 2 {
				return fmt.Errorf("%s takes GRANT-ID, or CALLER and TARGET", cmd.CommandPath())
			}
			return nil
		},
		RunE: e.withAdmin(func(cmd *cobra.Command, args []string, c adminv1.AdminServiceClient) error {
			var err error
			req := &adminv1.RevokeGrantsRequest{}
			if len(args) == 1 {
				req.Id = args[0]
			} else {
				if req.Caller, err = resolveID(cmd.Context(), c, args[0]); err != nil {
					return err
				}
				if req.Target, err = resolveID(cmd.Context(), c, args[1]); err != nil {
					return err
				}
			}
			resp, err := c.RevokeGrants(cmd.Context(), req)
			if err != nil {
				return err
			}
			err = e.print(resp, func() {
				for _, g := range resp.GetGrants() {
					fmt.Fprintf(e.stdout, "revoked %s (%s → %s)\n", g.GetId(), g.GetCaller(), g.GetTarget())
				}
			})
			if err != nil {
				return err
			}
			var targets []string
			for _, g := range resp.GetGrants() {
				if !slices.Contains(targets, g.GetTarget()) {
					targets = append(targets, g.GetTarget())
				}
			}
			return e.reportEnforcement(cmd.Context(), c, resp.GetRevision(), targets, wait)
		}),
	}
	bindWait(cmd, &wait)
	return cmd
}

func (e *env) grantsCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "grants", Short: "List grants"}
	var caller, target, source string
	list := &cobra.Command{
		Use:   "list [--caller X] [--target Y] [--source smi:NS/NAME]",
		Short: "List grants, CLI-made and from the policy repository, with their source and expiry",
		Args:  noArgs,
		RunE: e.withAdmin(func(cmd *cobra.Command, _ []string, c adminv1.AdminServiceClient) error {
			var err error
			req := &adminv1.ListGrantsRequest{Source: source}
			if caller != "" {
				if req.Caller, err = resolveID(cmd.Context(), c, caller); err != nil {
					return err
				}
			}
			if target != "" {
				if req.Target, err = resolveID(cmd.Context(), c, target); err != nil {
					return err
				}
			}
			resp, err := listGrants(cmd.Context(), c, req)
			if err != nil {
				return err
			}
			return e.print(resp, func() { e.grantTable(resp.GetGrants()) })
		}),
	}
	list.Flags().StringVar(&caller, "caller", "", "only grants that apply to this caller")
	list.Flags().StringVar(&target, "target", "", "only grants that apply to this target")
	list.Flags().StringVar(&source, "source", "", "only grants of this source (smi:default/x), or of every source it begins when it ends in : or / (smi:, istio:prod/)")
	cmd.AddCommand(list)
	return cmd
}

// printGrant prints one grant as a one-row table, or as JSON.
func (e *env) printGrant(g *adminv1.Grant) error {
	return e.print(g, func() { e.grantTable([]*adminv1.Grant{g}) })
}

func (e *env) grantTable(gs []*adminv1.Grant) {
	var rows [][]string
	for _, g := range gs {
		exp := "never"
		if g.GetExpiresAt() != nil {
			exp = fmtTime(g.GetExpiresAt())
			if g.GetExpired() {
				exp += " (expired)"
			}
		}
		id := g.GetId()
		if g.GetDeny() {
			id += " (deny)"
		}
		rows = append(rows, []string{id, g.GetCaller(), g.GetTarget(), orAny(g.GetMethods()), pathsOf(g), exp, g.GetSource(), orDash(g.GetReason())})
	}
	e.table([]string{"ID", "CALLER", "TARGET", "METHODS", "PATHS", "EXPIRES", "SOURCE", "REASON"}, rows)
}

// pathsOf is the PATHS column: patterns, then ~expressions, then the other conditions of the grant.
func pathsOf(g *adminv1.Grant) string {
	ps := slices.Clone(g.GetPaths())
	for _, r := range g.GetPathRegex() {
		ps = append(ps, "~"+r)
	}
	s := orAny(ps)
	if len(g.GetNotPaths()) > 0 {
		s += " except " + strings.Join(g.GetNotPaths(), ",")
	}
	if len(g.GetNotMethods()) > 0 {
		s += " except methods " + strings.Join(g.GetNotMethods(), ",")
	}
	if len(g.GetNotCallers()) > 0 {
		s += " except callers " + strings.Join(g.GetNotCallers(), ",")
	}
	for _, k := range slices.Sorted(maps.Keys(g.GetHeaders())) {
		s += " " + k + "~" + g.GetHeaders()[k]
	}
	if len(g.GetPorts()) > 0 {
		var ports []string
		for _, p := range g.GetPorts() {
			ports = append(ports, fmt.Sprint(p))
		}
		s += " ports " + strings.Join(ports, ",")
	}
	return s
}

// headerFlags parses NAME=VALUE flags into a map with lower-case names.
func headerFlags(flag string, vs []string) (map[string]string, error) {
	if len(vs) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, v := range vs {
		name, value, ok := strings.Cut(v, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("%s %q: want NAME=VALUE, e.g. user-agent=.*Android.*", flag, v)
		}
		m[strings.ToLower(name)] = value
	}
	return m, nil
}

func orAny(ss []string) string {
	if len(ss) == 0 {
		return "any"
	}
	return strings.Join(ss, ",")
}

func (e *env) whoCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "who TARGET",
		Short: "Who may call TARGET, and how",
		Args:  exactArgs(1, "TARGET"),
		RunE: e.withAdmin(func(cmd *cobra.Command, args []string, c adminv1.AdminServiceClient) error {
			target, err := resolveID(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			resp, err := listGrants(cmd.Context(), c, &adminv1.ListGrantsRequest{Target: target})
			if err != nil {
				return err
			}
			modes, err := listTargetModes(cmd.Context(), c)
			if err != nil {
				return err
			}
			var live []*adminv1.Grant
			for _, g := range resp.GetGrants() {
				if !g.GetExpired() {
					live = append(live, g)
				}
			}
			return e.print(&adminv1.ListGrantsResponse{Grants: live}, func() {
				mode := modes.GetModes()[target]
				if mode == "" {
					mode = "enforce"
				}
				fmt.Fprintf(e.stdout, "%s (mode %s) may be called by:\n", target, mode)
				if len(live) == 0 {
					fmt.Fprintln(e.stdout, "  nobody (no grant)")
				}
				for _, g := range live {
					until := ""
					if g.GetExpiresAt() != nil {
						until = " until " + fmtTime(g.GetExpiresAt())
					}
					fmt.Fprintf(e.stdout, "  %s  methods %s  paths %s%s  [%s, %s]\n", g.GetCaller(), orAny(g.GetMethods()), orAny(g.GetPaths()), until, g.GetId(), g.GetSource())
				}
			})
		}),
	}
}

func (e *env) graphCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "graph -o dot|mermaid|json",
		Short: "Print who may call whom as a Graphviz or Mermaid graph, or as JSON nodes and edges",
		Args:  noArgs,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("output") {
				e.output = "dot"
			}
			if e.output != "dot" && e.output != "mermaid" && e.output != "json" {
				return usage(fmt.Errorf("-o %q: use dot, mermaid or json", e.output))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := withClient(cmd.Context(), e, func(ctx context.Context, c adminv1.AdminServiceClient) (*adminv1.ListGrantsResponse, error) {
				return listGrants(ctx, c, &adminv1.ListGrantsRequest{})
			})
			if err != nil {
				return err
			}
			type edge struct{ from, to, label string }
			var edges []edge
			type jsonEdge struct {
				Grant   string   `json:"grant"`
				Caller  string   `json:"caller"`
				Target  string   `json:"target"`
				Methods []string `json:"methods"`
				Paths   []string `json:"paths"`
			}
			graph := struct {
				Nodes []string   `json:"nodes"`
				Edges []jsonEdge `json:"edges"`
			}{Nodes: []string{}, Edges: []jsonEdge{}}
			seen := map[string]bool{}
			for _, g := range resp.GetGrants() {
				if g.GetExpired() {
					continue
				}
				label := orAny(g.GetMethods()) + " " + orAny(g.GetPaths())
				edges = append(edges, edge{g.GetCaller(), g.GetTarget(), label})
				graph.Edges = append(graph.Edges, jsonEdge{g.GetId(), g.GetCaller(), g.GetTarget(), nonNil(g.GetMethods()), nonNil(g.GetPaths())})
				for _, n := range []string{g.GetCaller(), g.GetTarget()} {
					if !seen[n] {
						seen[n] = true
						graph.Nodes = append(graph.Nodes, n)
					}
				}
			}
			w := e.stdout
			if e.output == "json" {
				return e.printJSON(graph)
			}
			if e.output == "mermaid" {
				fmt.Fprintln(w, "graph LR")
				ids := map[string]string{}
				node := func(s string) string {
					if id, ok := ids[s]; ok {
						return id
					}
					id := fmt.Sprintf("n%d", len(ids))
					ids[s] = id
					fmt.Fprintf(w, "  %s[\"%s\"]\n", id, s)
					return id
				}
				for _, ed := range edges {
					from, to := node(ed.from), node(ed.to)
					fmt.Fprintf(w, "  %s -->|\"%s\"| %s\n", from, ed.label, to)
				}
				return nil
			}
			fmt.Fprintln(w, "digraph kith {\n  rankdir=LR;\n  node [shape=box];")
			for _, ed := range edges {
				fmt.Fprintf(w, "  %q -> %q [label=%q];\n", ed.from, ed.to, ed.label)
			}
			fmt.Fprintln(w, "}")
			return nil
		},
	}
}

func (e *env) targetCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "target", Short: "Per-target authorization settings"}
	mode := &cobra.Command{
		Use:   "mode TARGET enforce|audit",
		Short: "In audit mode denials are logged and counted but the request is allowed",
		Args:  exactArgs(2, "TARGET and enforce|audit"),
		RunE: e.withAdmin(func(cmd *cobra.Command, args []string, c adminv1.AdminServiceClient) error {
			target, err := resolveID(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			if _, err := c.SetTargetMode(cmd.Context(), &adminv1.SetTargetModeRequest{Target: target, Mode: args[1]}); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s is now in %s mode\n", target, args[1])
			return nil
		}),
	}
	cmd.AddCommand(mode)
	return cmd
}

func (e *env) canCommand() *cobra.Command {
	var method, path, policyDir, dataFile, decision string
	var headers []string
	var port uint
	return withFlags(&cobra.Command{
		Use:   "can CALLER TARGET [--method M] [--path P] [--header NAME=VALUE]... [--port N] [--policy-dir DIR] [--data FILE]",
		Short: "Explain whether CALLER may call TARGET; exit 0 allowed, 1 denied, 2 error; offline with --policy-dir or --data",
		Args:  exactArgs(2, "CALLER and TARGET"),
		RunE: func(cmd *cobra.Command, args []string) error {
			fail := func(err error) error { return &exitError{code: 2, err: fmt.Errorf("%s", describe(err, e.adminSocket))} }
			if policyDir != "" || dataFile != "" {
				resp, err := canOffline(cmd.Context(), args[0], args[1], method, path, policyDir, dataFile, decision)
				if err != nil {
					return fail(err)
				}
				return e.printCan(resp, args[0], args[1], method, path)
			}
			c, done, err := e.admin()
			if err != nil {
				return fail(err)
			}
			defer done()
			caller, err := resolveID(cmd.Context(), c, args[0])
			if err != nil {
				return fail(err)
			}
			target, err := resolveID(cmd.Context(), c, args[1])
			if err != nil {
				return fail(err)
			}
			h, err := headerFlags("--header", headers)
			if err != nil {
				return usage(err)
			}
			if port > 65535 {
				return usage(fmt.Errorf("--port %d: want 1 to 65535", port))
			}
			resp, err := c.Can(cmd.Context(), &adminv1.CanRequest{Caller: caller, Target: target, Method: method, Path: path, Headers: h, Port: uint32(port)})
			if err != nil {
				return fail(err)
			}
			return e.printCan(resp, caller, target, method, path)
		},
	}, func(cmd *cobra.Command) {
		cmd.Flags().StringVar(&method, "method", "GET", "HTTP method")
		cmd.Flags().StringVar(&path, "path", "/", "request path")
		cmd.Flags().StringArrayVar(&headers, "header", nil, "NAME=VALUE: a request header, for grants that match headers (repeatable)")
		cmd.Flags().UintVar(&port, "port", 0, "destination port, for grants limited to ports")
		cmd.Flags().StringVar(&policyDir, "policy-dir", "", "answer offline from this policy directory (Rego, tests, data file), as kith policy check reads it; no server")
		cmd.Flags().StringVar(&dataFile, "data", "", "answer offline with the grants and labels of this data file (data.json or data.yaml form); no server")
		cmd.Flags().StringVar(&decision, "authz-decision", "", "with --policy-dir: the server's authz.decision, if set")
	})
}

// printCan writes kith can's answer and returns its exit status: nil when allowed, exit 1 when denied.
func (e *env) printCan(resp *adminv1.CanResponse, caller, target, method, path string) error {
	fail := func(err error) error { return &exitError{code: 2, err: err} }
	out := map[string]any{"allowed": resp.GetAllowed(), "reasons": nonNil(resp.GetReasons()), "mode": resp.GetMode(),
		"policy_allowed": resp.GetPolicyAllowed(), "grant": resp.GetGrant(), "headers": resp.GetHeaders(), "policy_revision": resp.GetPolicyRevision(), "verified_by": resp.GetVerifiedBy()}
	err := e.print(out, func() {
		verdict := "DENIED"
		if resp.GetAllowed() {
			verdict = "ALLOWED"
		}
		if resp.GetAllowed() && !resp.GetPolicyAllowed() {
			verdict = "ALLOWED (audit mode: the policy denies it)"
		}
		m, p := method, path
		if m == "" {
			m = "GET"
		}
		if p == "" {
			p = "/"
		}
		fmt.Fprintf(e.stdout, "%s: %s → %s %s %s (mode %s)\n", verdict, caller, target, strings.ToUpper(m), p, resp.GetMode())
		for _, r := range resp.GetReasons() {
			fmt.Fprintf(e.stdout, "  - %s\n", r)
		}
		for k, v := range resp.GetHeaders() {
			fmt.Fprintf(e.stdout, "  header %s: %s\n", k, v)
		}
		if v := resp.GetVerifiedBy(); v != "" {
			fmt.Fprintf(e.stdout, "  caller verified by: %s\n", v)
		}
	})
	if err != nil {
		return fail(err)
	}
	if !resp.GetAllowed() {
		return &exitError{code: 1}
	}
	return nil
}

func withFlags(cmd *cobra.Command, f func(*cobra.Command)) *cobra.Command {
	f(cmd)
	return cmd
}

func nonNil(ss []string) []string {
	if ss == nil {
		return []string{}
	}
	return ss
}
