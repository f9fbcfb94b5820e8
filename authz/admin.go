package authz

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

//go:embed admin.rego
var adminSource string

// AdminModule is the file name of the built-in admin policy among the modules.
const AdminModule = "kith/admin.rego"

// AdminPolicy returns the source of the built-in admin policy (package kith.admin).
func AdminPolicy() string { return adminSource }

var adminParsed = ast.MustParseModuleWithOpts(adminSource, ast.ParserOptions{RegoVersion: ast.RegoV1})

// AdminCaller is the user making an admin call.
type AdminCaller struct {
	ID     string // spiffe://TD/user/<name>
	User   string
	Roles  []string
	Labels map[string]string
}

// AdminIdentity is an identity an admin call is about: its ID and, for a target, who owns it.
type AdminIdentity struct {
	ID         string
	Owners     []string // users named by the owner=<user> labels of its entries
	OwnerTeams []string // teams named by their owner-team=<team> labels
}

// AdminInput is one admin call to authorize.
type AdminInput struct {
	Method  string
	Caller  AdminCaller
	Target  *AdminIdentity // nil: the call is about no identity
	Subject *AdminIdentity // nil: none
	Request map[string]any // extra facts for policy (duration_seconds, reason)
}

// AdminDecision is the answer to an admin call.
type AdminDecision struct {
	Allowed     bool
	Reasons     []string // why not, when refused
	AutoApprove bool     // for CreateAccessRequest: policy approves it at once
}

// AdminEngine authorizes admin API calls with the built-in kith.admin policy and the custom modules of the
// policy in force (which may extend it in package kith.admin.ext). It is safe for concurrent use.
type AdminEngine struct {
	mu sync.RWMutex
	pq rego.PreparedEvalQuery
}

// NewAdmin returns an engine with the built-in admin policy.
func NewAdmin() (*AdminEngine, error) {
	e := &AdminEngine{}
	if err := e.SetPolicy(context.Background(), nil); err != nil {
		return nil, err
	}
	return e, nil
}

// SetPolicy compiles the custom modules with the built-in admin policy; on error the policy in force stays.
// Modules may not define package kith.admin itself (only kith.admin.ext and below, or other packages).
func (e *AdminEngine) SetPolicy(ctx context.Context, modules map[string]string) error {
	parsed := map[string]*ast.Module{AdminModule: adminParsed, BuiltinModule: builtinParsed}
	for _, name := range slices.Sorted(maps.Keys(modules)) {
		m, err := ast.ParseModuleWithOpts(name, modules[name], ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			return fmt.Errorf("parse %s: %w", name, err)
		}
		parsed[name] = m
	}
	compiler := ast.NewCompiler().WithDefaultRegoVersion(ast.RegoV1)
	if compiler.Compile(parsed); compiler.Failed() {
		return fmt.Errorf("admin policy: %w", compiler.Errors)
	}
	pq, err := rego.New(rego.Query("data.kith.admin.decision"), rego.Compiler(compiler), rego.SetRegoVersion(ast.RegoV1)).PrepareForEval(ctx)
	if err != nil {
		return fmt.Errorf("prepare admin policy: %w", err)
	}
	// Every policy must decide a sample call without error before it is in force.
	if _, err := decideAdmin(ctx, pq, AdminInput{Method: "CreateGrant", Caller: AdminCaller{ID: "spiffe://example.org/user/a", User: "a"},
		Target: &AdminIdentity{ID: "spiffe://example.org/payments", Owners: []string{"b"}}}); err != nil {
		return fmt.Errorf("admin policy: sample call: %w", err)
	}
	e.mu.Lock()
	e.pq = pq
	e.mu.Unlock()
	return nil
}

// Decide authorizes one call. An error means no decision: callers must refuse.
func (e *AdminEngine) Decide(ctx context.Context, in AdminInput) (AdminDecision, error) {
	e.mu.RLock()
	pq := e.pq
	e.mu.RUnlock()
	return decideAdmin(ctx, pq, in)
}

func identityValue(id *AdminIdentity) ast.Value {
	return ast.NewObject(
		ast.Item(ast.StringTerm("id"), ast.StringTerm(id.ID)),
		ast.Item(ast.StringTerm("owners"), stringsTerm(id.Owners)),
		ast.Item(ast.StringTerm("owner_teams"), stringsTerm(id.OwnerTeams)),
	)
}

func decideAdmin(ctx context.Context, pq rego.PreparedEvalQuery, in AdminInput) (AdminDecision, error) {
	caller := ast.NewObject(
		ast.Item(ast.StringTerm("id"), ast.StringTerm(in.Caller.ID)),
		ast.Item(ast.StringTerm("user"), ast.StringTerm(in.Caller.User)),
		ast.Item(ast.StringTerm("roles"), stringsTerm(in.Caller.Roles)),
		ast.Item(ast.StringTerm("labels"), labelsTerm(in.Caller.Labels)),
	)
	items := [][2]*ast.Term{
		ast.Item(ast.StringTerm("method"), ast.StringTerm(in.Method)),
		ast.Item(ast.StringTerm("caller"), ast.NewTerm(caller)),
	}
	if in.Target != nil {
		items = append(items, ast.Item(ast.StringTerm("target"), ast.NewTerm(identityValue(in.Target))))
	}
	if in.Subject != nil {
		items = append(items, ast.Item(ast.StringTerm("subject"), ast.NewTerm(identityValue(in.Subject))))
	}
	if in.Request != nil {
		v, err := ast.InterfaceToValue(in.Request)
		if err != nil {
			return AdminDecision{}, fmt.Errorf("admin input request: %w", err)
		}
		items = append(items, ast.Item(ast.StringTerm("request"), ast.NewTerm(v)))
	}
	rs, err := pq.Eval(ctx, rego.EvalParsedInput(ast.NewObject(items...)), noMetricsOption, neverCancelledOption)
	if err != nil {
		return AdminDecision{}, fmt.Errorf("evaluate admin policy: %w", err)
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return AdminDecision{}, errors.New("admin policy: data.kith.admin.decision is undefined")
	}
	m, ok := rs[0].Expressions[0].Value.(map[string]any)
	if !ok {
		return AdminDecision{}, fmt.Errorf("admin policy: decision is %T, not an object", rs[0].Expressions[0].Value)
	}
	var d AdminDecision
	d.Allowed, _ = m["allow"].(bool)
	d.AutoApprove, _ = m["auto_approve"].(bool)
	if why, ok := m["why"].([]any); ok {
		for _, w := range why {
			if s, ok := w.(string); ok {
				d.Reasons = append(d.Reasons, s)
			}
		}
	}
	slices.Sort(d.Reasons)
	if !d.Allowed && len(d.Reasons) == 0 {
		d.Reasons = []string{"the admin policy does not allow " + in.Method + " for " + in.Caller.User}
	}
	return d, nil
}

// Explain is the one-line reason of a refusal.
func (d AdminDecision) Explain() string { return strings.Join(d.Reasons, "; ") }
