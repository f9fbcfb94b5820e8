package authz

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/authz/grant"
)

//go:embed builtin.rego
var builtinSource string

// BuiltinModule is the file name of the built-in policy among the modules.
const BuiltinModule = "kith/builtin.rego"

// BuiltinRevision is the revision of the policy before the first SetPolicy.
const BuiltinRevision = "builtin"

// BuiltinPolicy returns the source of the built-in policy, for tools (such as policy tests) that compile
// custom modules together with it.
func BuiltinPolicy() string { return builtinSource }

// builtinQuery asks for the parts of the built-in decision that Go combines
// exactly as data.kith.authz.allow does; extQuery adds the parts that
// package kith.ext can set, when it exists.
const (
	builtinQuery = `{"grants": data.kith.authz.hits}`
	extQuery     = `{"grants": data.kith.authz.hits, "deny": data.kith.authz.ext_deny, "ext_allow": data.kith.authz.ext_allow, "headers": data.kith.authz.ext_headers, "http_status": data.kith.authz.http_status}`
)

var builtinParsed = ast.MustParseModuleWithOpts(builtinSource, ast.ParserOptions{RegoVersion: ast.RegoV1})

// Config configures an Engine. Every field is optional.
type Config struct {
	// Now is the clock grants expire by. Zero: time.Now.
	Now func() time.Time
	// Logger receives audit-mode denials and policy changes. Zero: slog.Default().
	Logger *slog.Logger
	// WhatIf marks an engine that answers hypothetical questions (the server's, for `kith can`) rather than
	// deciding traffic: an audit-mode denial is then neither logged as a request that would have been
	// denied nor counted. Zero: a traffic engine (the agent's).
	WhatIf bool
	// Decision, when set (e.g. "envoy/authz/allow"), names an OPA-Envoy-style
	// decision in the custom modules to use instead of Kith's built-in one: a
	// boolean, or an object with "allowed", "headers" and "http_status" (as
	// OPA-Envoy's data.envoy.authz.allow). Undefined means deny. Zero: the
	// built-in decision (grants plus package kith.ext).
	Decision string
	// EvalBudget bounds how long the decision may take on each of the sample requests every policy is
	// evaluated on before it is put in force (SetPolicy): a policy that takes longer is refused, naming
	// the rule the time went to, rather than slowing every request. Zero: DefaultEvalBudget.
	EvalBudget time.Duration
}

// DefaultEvalBudget is Config.EvalBudget's default: half the agent's default ext_authz deadline (50 ms).
// The built-in policy takes ≈ 0.05 ms per sample request.
const DefaultEvalBudget = 25 * time.Millisecond

// Input is one request to decide.
type Input struct {
	Caller      spiffeid.ID       // zero when the request carries no identity
	Target      spiffeid.ID       // the called service
	Method      string            // HTTP method; gRPC is POST
	Path        string            // without query
	Attributes  map[string]any    // Envoy CheckRequest.attributes as protojson (OPA-Envoy's input.attributes); may be nil
	Headers     map[string]string // request headers, lower-case names, for grants that match headers; may be nil
	Port        uint32            // destination port, for grants limited to ports; 0 when unknown
	ParsedPath  []string          // OPA-Envoy's input.parsed_path; computed from Path if nil
	ParsedQuery map[string][]string
	// Query is the raw query of the request, for a Path without one. When
	// ParsedQuery is nil and the policy reads input.parsed_query, it is
	// parsed from the query of Path, else Query, else that of
	// Attributes.request.http.path.
	Query string
}

// Decision is the answer for one request and why.
type Decision struct {
	Allowed       bool // final answer (true in audit mode even when the policy denied)
	PolicyAllowed bool // what the policy said before audit mode
	Mode          Mode
	Reasons       []string
	Grant         string            // ID of the matching grant, if any
	Headers       map[string]string // to add to the upstream request, as set by policies
	HTTPStatus    int               // for denials: 403 unless the policy says otherwise
	Revision      string            // policy revision that decided
}

// Stats counts decisions since New.
type Stats struct {
	Allowed     uint64
	Denied      uint64
	AuditDenied uint64 // denied by the policy but let through in audit mode
	Errors      uint64
}

// Engine decides requests with OPA. It is safe for concurrent use.
type Engine struct {
	now        func() time.Time
	log        *slog.Logger
	query      string
	decision   string        // Config.Decision, as given
	whatIf     bool          // Config.WhatIf
	evalBudget time.Duration // Config.EvalBudget or its default
	store      storage.Store

	policy   atomic.Pointer[policy]
	policyMu sync.Mutex // serialises SetPolicy

	mu     sync.RWMutex // guards grants, values, labels, modes and writes to store
	grants map[string]*storedGrant
	values map[string]ast.Value // interned grant documents, see storeValue
	labels map[string]*ast.Term // SPIFFE ID -> labels object
	modes  map[string]Mode
	// ext holds the extended grants (grant.Grant.Extended), compiled, by target then caller then ID.
	ext  extIndex
	extN atomic.Int64 // how many

	// maxIDSlashes and maxPathSlashes bound the prefix keys computed for a
	// request: no grant has a prefix with more "/" than these.
	maxIDSlashes, maxPathSlashes atomic.Int32

	ids atomic.Pointer[idCache] // input terms per SPIFFE ID

	// disabled holds the IDs labelled DisabledLabel=true (disabled users): denied before any policy.
	disabled atomic.Pointer[map[string]bool]

	allowed, denied, auditDenied, errs atomic.Uint64
}

type policy struct {
	revision string
	query    rego.PreparedEvalQuery
	needs    inputNeeds
	// builtinOnly is set when there are no custom modules: then base
	// documents are read once per decision and need no cache.
	builtinOnly bool
}

// New returns an engine with the built-in policy and no data.
func New(cfg Config) (*Engine, error) {
	e := &Engine{
		now:    cfg.Now,
		log:    cfg.Logger,
		whatIf: cfg.WhatIf,
		query:  builtinQuery,
		grants: map[string]*storedGrant{},
		values: map[string]ast.Value{},
		labels: map[string]*ast.Term{},
		modes:  map[string]Mode{},
		ext:    extIndex{},
	}
	e.ids.Store(&idCache{})
	e.disabled.Store(&map[string]bool{})
	if cfg.EvalBudget < 0 {
		return nil, fmt.Errorf("new authz engine: evaluation budget %s is negative", cfg.EvalBudget)
	}
	e.evalBudget = cmp.Or(cfg.EvalBudget, DefaultEvalBudget)
	if e.now == nil {
		e.now = time.Now
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	if cfg.Decision != "" {
		q, err := decisionQuery(cfg.Decision)
		if err != nil {
			return nil, err
		}
		e.query = q
		e.decision = cfg.Decision
	}
	e.store = inmem.NewFromObjectWithOpts(
		map[string]any{"kith": map[string]any{"grants": map[string]any{}}},
		inmem.OptRoundTripOnWrite(false),
		inmem.OptReturnASTValuesOnRead(true),
	)
	p, err := e.prepare(context.Background(), BuiltinRevision, nil)
	if err != nil {
		return nil, fmt.Errorf("prepare built-in policy: %w", err)
	}
	e.policy.Store(p)
	return e, nil
}

// decisionQuery turns "envoy/authz/allow" into "data.envoy.authz.allow".
func decisionQuery(path string) (string, error) {
	ref := ast.DefaultRootRef.Copy()
	for seg := range strings.SplitSeq(strings.Trim(path, "/"), "/") {
		if seg == "" {
			return "", fmt.Errorf("decision %q: empty path segment; want a path such as envoy/authz/allow", path)
		}
		ref = ref.Append(ast.StringTerm(seg))
	}
	return ref.String(), nil
}

// Revision returns the revision of the policy in force.
func (e *Engine) Revision() string { return e.policy.Load().revision }

// Stats returns the decision counters.
func (e *Engine) Stats() Stats {
	return Stats{Allowed: e.allowed.Load(), Denied: e.denied.Load(), AuditDenied: e.auditDenied.Load(), Errors: e.errs.Load()}
}

// SetPolicy compiles the custom Rego modules (file name -> source) together
// with the built-in policy, checks that the decision evaluates without error
// on sample requests, and only then puts them in force. On error the policy
// in force stays; the error names file and line.
//
// Custom modules use Rego v1 syntax and may use any package except kith
// and its sub-packages, other than kith.ext (and below).
func (e *Engine) SetPolicy(ctx context.Context, revision string, modules map[string]string) error {
	e.policyMu.Lock()
	defer e.policyMu.Unlock()
	p, err := e.prepare(ctx, revision, modules)
	if err != nil {
		return fmt.Errorf("policy revision %s: %w", revision, err)
	}
	old := e.policy.Swap(p)
	e.log.Info("authz policy in force", slog.String("revision", revision), slog.String("previous", old.revision), slog.Int("modules", len(modules)))
	return nil
}

var (
	kithRef     = ast.MustParseRef("data.kith")
	extRef      = ast.MustParseRef("data.kith.ext")
	adminExtRef = ast.MustParseRef("data.kith.admin.ext")
)

func (e *Engine) prepare(ctx context.Context, revision string, modules map[string]string) (*policy, error) {
	parsed := map[string]*ast.Module{BuiltinModule: builtinParsed}
	var errs ast.Errors
	hasExt := false
	for _, name := range slices.Sorted(maps.Keys(modules)) {
		if name == BuiltinModule {
			return nil, fmt.Errorf("module name %s is reserved for the built-in policy", name)
		}
		m, err := ast.ParseModuleWithOpts(name, modules[name], ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			var astErrs ast.Errors
			if errors.As(err, &astErrs) {
				errs = append(errs, astErrs...)
				continue
			}
			return nil, fmt.Errorf("parse %s: %w", name, err)
		}
		if m.Package.Path.HasPrefix(kithRef) && !m.Package.Path.HasPrefix(extRef) && !m.Package.Path.HasPrefix(adminExtRef) {
			errs = append(errs, ast.NewError(ast.CompileErr, m.Package.Location,
				"package %s is reserved for Kith; put extensions in package kith.ext (requests) or kith.admin.ext (admin calls)", strings.TrimPrefix(m.Package.Path.String(), "data.")))
			continue
		}
		parsed[name] = m
		hasExt = hasExt || m.Package.Path.HasPrefix(extRef)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	compiler := ast.NewCompiler().WithDefaultRegoVersion(ast.RegoV1)
	if compiler.Compile(parsed); compiler.Failed() {
		return nil, compiler.Errors
	}
	query := e.query
	if query == builtinQuery && hasExt {
		query = extQuery
	}
	pq, err := rego.New(
		rego.Query(query),
		rego.Compiler(compiler),
		rego.Store(e.store),
		rego.SetRegoVersion(ast.RegoV1),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("prepare query %s: %w", query, err)
	}
	p := &policy{revision: revision, query: pq, needs: needsOf(compiler.Modules), builtinOnly: len(modules) == 0}
	for i, in := range sampleInputs() {
		var builtinErrs []topdown.Error
		now := e.now()
		cleaned, _ := cleanPath(in.Path)
		v, err := e.input(in, cleaned, now, p.needs)
		if err != nil {
			return nil, err
		}
		var (
			rs   rego.ResultSet
			over bool
		)
		// Over budget twice, so that a pause of the process (GC, a busy machine) does not refuse a policy.
		for range 2 {
			builtinErrs = builtinErrs[:0]
			sctx, cancel := context.WithTimeout(ctx, e.evalBudget)
			opts, stop := e.evalOptions(sctx, p, v)
			start := time.Now()
			rs, err = pq.Eval(sctx, append(opts, rego.EvalBuiltinErrorList(&builtinErrs))...)
			over = time.Since(start) > e.evalBudget || sctx.Err() != nil
			stop()
			cancel()
			if !over {
				break
			}
		}
		if over && ctx.Err() == nil {
			return nil, fmt.Errorf("sample request %d (%s %s %s) took longer than the %s evaluation budget%s: a decision that slow would "+
				"miss the agents' ext_authz deadline; make the rule cheaper", i+1, in.Method, in.Path, in.Target, e.evalBudget,
				e.hotRule(ctx, p, v, compiler))
		}
		if err != nil {
			return nil, fmt.Errorf("evaluate sample request %d (%s %s %s): %w", i+1, in.Method, in.Path, in.Target, err)
		}
		if len(builtinErrs) > 0 {
			return nil, fmt.Errorf("evaluate sample request %d (%s %s %s): %w", i+1, in.Method, in.Path, in.Target, &builtinErrs[0])
		}
		if _, err := e.interpret(rs, in, now); err != nil {
			return nil, fmt.Errorf("sample request %d (%s %s %s): %w", i+1, in.Method, in.Path, in.Target, err)
		}
	}
	return p, nil
}

// sampleInputs are the requests every policy must evaluate without error.
func sampleInputs() []Input {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	frontend := spiffeid.RequireFromPath(td, "/ns/prod/sa/frontend")
	payments := spiffeid.RequireFromPath(td, "/ns/prod/sa/payments")
	return []Input{
		{Caller: frontend, Target: payments, Method: "GET", Path: "/api/v1/users",
			Attributes: map[string]any{
				"source":      map[string]any{"principal": frontend.String()},
				"destination": map[string]any{"principal": payments.String()},
				"request": map[string]any{"http": map[string]any{
					"method": "GET", "path": "/api/v1/users?limit=10", "host": "payments",
					"headers": map[string]any{":method": "GET", ":path": "/api/v1/users?limit=10", "user-agent": "kith-sample"},
				}},
			}},
		{Target: payments, Method: "POST", Path: "/pkg.Service/Method"},
		{Caller: spiffeid.RequireFromPath(td, "/user/scott"), Target: spiffeid.RequireFromPath(td, "/ns/dev/sa/x"), Method: "DELETE", Path: "/"},
	}
}

// Decide evaluates the policy in force for in. An error means no decision
// could be made; callers must then deny.
func (e *Engine) Decide(ctx context.Context, in Input) (Decision, error) {
	p := e.policy.Load()
	now := e.now()
	rawPath, _, _ := strings.Cut(in.Path, "?")
	cleaned, err := grant.NormalizePath(rawPath)
	if err != nil {
		// Refused whatever the policy and the target's mode, as Envoy refuses it when configured as
		// deploy/envoy/sidecar.yaml is: what the server behind the proxy would make of it is unknown.
		e.denied.Add(1)
		return Decision{HTTPStatus: 400, Revision: p.revision, Mode: e.mode(in.Target),
			Reasons: []string{fmt.Sprintf("request path refused: %v", err)}}, nil
	}
	if !in.Caller.IsZero() && (*e.disabled.Load())[in.Caller.String()] {
		// A disabled user's SVID may still be valid for hours: refused whatever the policy and the mode.
		e.denied.Add(1)
		return Decision{HTTPStatus: 403, Revision: p.revision, Mode: e.mode(in.Target),
			Reasons: []string{fmt.Sprintf("caller %s is disabled (kith user disable); its certificate is no longer honoured", in.Caller)}}, nil
	}
	v, err := e.input(in, cleaned, now, p.needs)
	if err != nil {
		e.errs.Add(1)
		return Decision{HTTPStatus: 403, Revision: p.revision}, err
	}
	opts, stop := e.evalOptions(ctx, p, v)
	rs, err := p.query.Eval(ctx, opts...)
	stop()
	if err != nil {
		e.errs.Add(1)
		return Decision{HTTPStatus: 403, Revision: p.revision}, fmt.Errorf("evaluate policy revision %s: %w", p.revision, err)
	}
	d, err := e.interpret(rs, in, now)
	if err != nil {
		e.errs.Add(1)
		return Decision{HTTPStatus: 403, Revision: p.revision}, fmt.Errorf("policy revision %s: %w", p.revision, err)
	}
	d.Revision = p.revision
	d.Mode = e.mode(in.Target)
	d.Allowed = d.PolicyAllowed
	switch {
	case d.PolicyAllowed:
		d.HTTPStatus = 0
		e.allowed.Add(1)
	case d.Mode == ModeAudit:
		d.Allowed = true
		d.HTTPStatus = 0
		if e.whatIf {
			break
		}
		e.auditDenied.Add(1)
		e.log.LogAttrs(ctx, slog.LevelInfo, "authz audit: request would be denied",
			slog.String("caller", in.Caller.String()), slog.String("target", in.Target.String()),
			slog.String("method", in.Method), slog.String("path", in.Path),
			slog.Any("reasons", d.Reasons), slog.String("revision", d.Revision))
	default:
		if d.HTTPStatus == 0 {
			d.HTTPStatus = 403
		}
		e.denied.Add(1)
	}
	return d, nil
}

// evalOptions are the options of one evaluation of p with input v, and a
// function to call once it is done: the result keeps its AST form for the
// built-in decision (interpret reads it without a conversion to Go values),
// a policy without custom modules is evaluated without caches, which it
// would fill but never hit, and the evaluation is cancelled with ctx by a
// callback rather than by the goroutine per evaluation that rego starts
// otherwise.
func (e *Engine) evalOptions(ctx context.Context, p *policy, v ast.Value) ([]rego.EvalOption, func() bool) {
	opts := make([]rego.EvalOption, 0, 7)
	opts = append(opts, rego.EvalParsedInput(v), noMetricsOption)
	stop := noStop
	if ctx.Done() == nil {
		opts = append(opts, neverCancelledOption)
	} else {
		c := topdown.NewCancel()
		opts = append(opts, rego.EvalExternalCancel(c))
		stop = context.AfterFunc(ctx, c.Cancel)
	}
	if e.decision == "" {
		opts = append(opts, keepASTOption)
	}
	if p.builtinOnly {
		opts = append(opts, noBaseCacheOption, noVirtualCacheOption)
	}
	return opts, stop
}

var (
	noMetricsOption      = rego.EvalMetrics(metrics.NoOp())
	neverCancelledOption = rego.EvalExternalCancel(topdown.NewCancel()) // for a context that is never done
	noStop               = func() bool { return false }
	keepASTOption        = rego.EvalGenerateJSON(func(t *ast.Term, _ *rego.EvalContext) (any, error) { return t, nil })
	noBaseCacheOption    = rego.EvalBaseCache(noBaseCache{})
	noVirtualCacheOption = rego.EvalVirtualCache(noVirtualCache{})
)

// noBaseCache does not cache reads of base documents: a decision reads
// data.kith.grants once and the in-memory store returns it without copying,
// so caching would only allocate.
type noBaseCache struct{}

func (noBaseCache) Get(ast.Ref) ast.Value  { return nil }
func (noBaseCache) Put(ast.Ref, ast.Value) {}

// noVirtualCache does not memoize rules and functions. The built-in query
// refers to data.kith.authz.matches once, and path_ok is called with a
// different grant each time, so the cache never hits.
type noVirtualCache struct{}

func (noVirtualCache) Push()                         {}
func (noVirtualCache) Pop()                          {}
func (noVirtualCache) Get(ast.Ref) (*ast.Term, bool) { return nil, false }
func (noVirtualCache) Put(ast.Ref, *ast.Term)        {}
func (noVirtualCache) Keys() []ast.Ref               { return nil }

func (e *Engine) mode(target spiffeid.ID) Mode {
	e.mu.RLock()
	m, ok := e.modes[target.String()]
	e.mu.RUnlock()
	if !ok {
		return ModeEnforce
	}
	return m
}

// interpret turns the query result into a decision (without mode).
func (e *Engine) interpret(rs rego.ResultSet, in Input, now time.Time) (Decision, error) {
	var v any
	if len(rs) > 0 && len(rs[0].Expressions) > 0 {
		v = rs[0].Expressions[0].Value
	}
	if e.decision != "" {
		return e.interpretCustom(v)
	}
	// The built-in decision is kept as AST (see evalOptions): the grant IDs
	// are read from it directly, the parts that package kith.ext sets are
	// converted as the default result conversion would.
	t, _ := v.(*ast.Term)
	var root ast.Object
	if t != nil {
		root, _ = t.Value.(ast.Object)
	}
	if root == nil {
		return Decision{}, fmt.Errorf("built-in decision is %T, want an object", asJSON(v))
	}
	var hits ast.Object
	if g := root.Get(grantsKey); g != nil {
		hits, _ = g.Value.(ast.Object)
	}
	var obj map[string]any
	if root.Len() > 1 {
		obj = make(map[string]any, root.Len()-1)
		root.Foreach(func(k, v *ast.Term) {
			if key, _ := k.Value.(ast.String); key != "grants" {
				obj[string(key)] = asJSON(v)
			}
		})
	}
	d := Decision{HTTPStatus: 403}
	if s, ok := obj["http_status"]; ok {
		n, ok := number(s)
		if !ok {
			return Decision{}, fmt.Errorf("kith.ext.http_status is %T, want a number", s)
		}
		d.HTTPStatus = n
	}
	headers, err := stringMap(obj["headers"])
	if err != nil {
		return Decision{}, fmt.Errorf("kith.ext.headers: %w", err)
	}
	d.Headers = headers
	var denies []string
	switch deny := obj["deny"].(type) {
	case nil:
	case []any:
		for _, r := range deny {
			s, ok := r.(string)
			if !ok {
				s = fmt.Sprint(r)
			}
			denies = append(denies, "denied by kith.ext: "+s)
		}
		sort.Strings(denies)
	default:
		return Decision{}, fmt.Errorf("kith.ext.deny is %T, want a set of strings", deny)
	}
	extAllow, _ := obj["ext_allow"].(bool)
	ids, denyIDs := splitHits(hits)

	// The same combination as data.kith.authz.allow.
	hasCaller := !in.Caller.IsZero()
	d.PolicyAllowed = len(denies) == 0 && len(denyIDs) == 0 && (hasCaller && len(ids) > 0 || extAllow)

	if !hasCaller {
		d.Reasons = append(d.Reasons, "no caller identity")
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	for _, id := range denyIDs {
		if g, known := e.grants[id]; known {
			d.Reasons = append(d.Reasons, g.deniesReason())
		} else {
			d.Reasons = append(d.Reasons, "deny rule "+id+" denies the request")
		}
	}
	d.Reasons = append(d.Reasons, denies...)
	if hasCaller {
		for _, id := range ids {
			if d.Grant == "" {
				d.Grant = id
			}
			if g, known := e.grants[id]; known {
				d.Reasons = append(d.Reasons, g.allowsReason())
			} else {
				d.Reasons = append(d.Reasons, "grant "+id+" allows "+describe(Grant{ID: id, Caller: "?", Target: "?"}))
			}
		}
	}
	if extAllow {
		d.Reasons = append(d.Reasons, "allowed by kith.ext")
	}
	if hasCaller && len(ids) == 0 {
		if !extAllow {
			d.Reasons = append(d.Reasons, fmt.Sprintf("no grant allows %s to call %s (%s %s)", in.Caller, in.Target, in.Method, in.Path))
		}
		d.Reasons = append(d.Reasons, e.explainMisses(in, now)...)
	}
	return d, nil
}

// explainMisses says why each grant stored for the request's caller and
// target keys does not allow it. The caller holds e.mu.
func (e *Engine) explainMisses(in Input, now time.Time) []string {
	method := strings.ToUpper(in.Method)
	rawPath, _, _ := strings.Cut(in.Path, "?")
	cleaned, _ := cleanPath(rawPath) // Decide refused the path if it was not valid
	v, err := storage.ReadOne(context.Background(), e.store, grantsPath)
	if err != nil {
		return []string{fmt.Sprintf("cannot read grants: %v", err)}
	}
	root, _ := v.(ast.Object)
	if root == nil {
		return nil
	}
	var ids []string
	for _, tk := range e.keysOf(in.Target) {
		callers, _ := valueAt(root, tk).(ast.Object)
		if callers == nil {
			continue
		}
		for _, ck := range e.keysOf(in.Caller) {
			if grants, _ := valueAt(callers, ck).(ast.Object); grants != nil {
				for _, k := range grants.Keys() {
					if s, ok := k.Value.(ast.String); ok {
						ids = append(ids, string(s))
					}
				}
			}
		}
	}
	slices.Sort(ids)
	var out []string
	r := grant.Request{Caller: in.Caller.String(), Method: method, Path: cleaned, Headers: in.Headers, Port: in.Port}
	for _, id := range ids {
		var g Grant
		sg, ok := e.grants[id]
		if !ok || sg.Deny {
			continue
		}
		g = sg.Grant
		state := grantState(g, now, method, cleaned)
		if state == "ok" && sg.compiled != nil {
			state = sg.compiled.Check(r)
		}
		name := "grant " + id + sg.from()
		switch state {
		case "ok", "":
		case "expired":
			out = append(out, fmt.Sprintf("%s expired at %s", name, g.ExpiresAt.UTC().Format(time.RFC3339)))
		case "method", "excepted method":
			out = append(out, fmt.Sprintf("%s does not allow method %s", name, method))
		case "path", "excepted path":
			out = append(out, fmt.Sprintf("%s does not allow path %s", name, in.Path))
		case "port":
			out = append(out, fmt.Sprintf("%s does not allow port %d", name, in.Port))
		case "excepted caller":
			out = append(out, fmt.Sprintf("%s excepts caller %s", name, in.Caller))
		default: // "header NAME"
			out = append(out, fmt.Sprintf("%s: the request's %s does not match", name, state))
		}
	}
	return out
}

var (
	grantsKey = ast.StringTerm("grants")
	denyKey   = ast.StringTerm("deny")
)

// splitHits returns the IDs of data.kith.authz.hits (ID -> grant document) that are grants and those
// that are deny rules, each sorted.
func splitHits(hits ast.Object) (grants, denies []string) {
	if hits == nil {
		return nil, nil
	}
	hits.Foreach(func(k, v *ast.Term) {
		id, ok := k.Value.(ast.String)
		if !ok {
			return
		}
		deny := false
		if doc, ok := v.Value.(ast.Object); ok {
			if d := doc.Get(denyKey); d != nil {
				deny = d.Value.Compare(ast.Boolean(true)) == 0
			}
		}
		if deny {
			denies = append(denies, string(id))
		} else {
			grants = append(grants, string(id))
		}
	})
	slices.Sort(grants)
	slices.Sort(denies)
	return grants, denies
}

// asJSON converts a result term to Go values as rego's default result
// conversion does; other values are returned as they are.
func asJSON(v any) any {
	t, ok := v.(*ast.Term)
	if !ok {
		return v
	}
	if t == nil {
		return nil
	}
	j, err := ast.JSON(t.Value)
	if err != nil {
		return t.Value
	}
	return j
}

func valueAt(obj ast.Object, key string) ast.Value {
	if t := obj.Get(ast.StringTerm(key)); t != nil {
		return t.Value
	}
	return nil
}

// interpretCustom reads an OPA-Envoy-style decision: a boolean or an object
// with allowed, headers and http_status.
func (e *Engine) interpretCustom(v any) (Decision, error) {
	name := "data." + strings.ReplaceAll(strings.Trim(e.decision, "/"), "/", ".")
	d := Decision{HTTPStatus: 403}
	switch v := v.(type) {
	case nil:
		d.Reasons = []string{name + " is undefined"}
		return d, nil
	case bool:
		d.PolicyAllowed = v
	case map[string]any:
		allowed, ok := v["allowed"].(bool)
		if !ok {
			return Decision{}, fmt.Errorf("%s.allowed is %T, want a boolean", name, v["allowed"])
		}
		d.PolicyAllowed = allowed
		if s, ok := number(v["http_status"]); ok {
			d.HTTPStatus = s
		}
		h, err := stringMap(v["headers"])
		if err != nil {
			return Decision{}, fmt.Errorf("%s.headers: %w", name, err)
		}
		d.Headers = h
		if body, ok := v["body"].(string); ok && body != "" && !allowed {
			d.Reasons = append(d.Reasons, body)
		}
	default:
		return Decision{}, fmt.Errorf("%s is %T, want a boolean or an object", name, v)
	}
	if d.PolicyAllowed {
		d.Reasons = append([]string{"allowed by " + name}, d.Reasons...)
	} else {
		d.Reasons = append([]string{"denied by " + name}, d.Reasons...)
	}
	return d, nil
}

func number(v any) (int, bool) {
	switch n := v.(type) {
	case int:
		return n, true
	case int64:
		return int(n), true
	case float64:
		return int(n), true
	case interface{ Int64() (int64, error) }: // json.Number
		i, err := n.Int64()
		return int(i), err == nil
	}
	return 0, false
}

func stringMap(v any) (map[string]string, error) {
	m, ok := v.(map[string]any)
	if v == nil {
		return nil, nil
	}
	if !ok {
		return nil, fmt.Errorf("got %T, want an object of strings", v)
	}
	if len(m) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("header %q is %T, want a string", k, v)
		}
		out[k] = s
	}
	return out, nil
}

// NeedsAttributes reports whether the active policy reads input.attributes, so callers can skip
// building that document when it does not.
func (e *Engine) NeedsAttributes() bool { return e.policy.Load().needs.attributes }
