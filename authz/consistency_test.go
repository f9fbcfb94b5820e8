package authz

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/kithid/kith/authz/grant"
)

// The built-in policy matches paths in Rego (path keys and glob.match);
// denials are explained in Go (grantState). Both must agree.
func TestPathMatchingAgreesBetweenRegoAndGo(t *testing.T) {
	patterns := []string{"/", "/*", "/api", "/api/*", "/api/v1/*", "/api/*/users", "/api/*/users/*", "/v*/x", "/pkg.Service/*", "/pkg.Service/Get", "/a/b/c/d/e/*"}
	paths := []string{"/", "/api", "/api/", "/api/v1", "/api/v1/", "/api/v1/users", "/api/v2/users/7", "/v1/x", "/v1/y/x", "/pkg.Service/Get", "/pkg.Service", "/a/b/c/d/e/f/g", "/a/b/c/d/e", "/api//v1", "/api/./v1", "/x/../api/v1"}
	ctx := context.Background()
	for _, pattern := range patterns {
		e := newEngine(t, Config{})
		mustPut(t, e, Grant{ID: "g", Caller: frontend.String(), Target: payments.String(), Paths: []string{pattern}})
		for _, p := range paths {
			t.Run(fmt.Sprintf("pattern %s and path %s", pattern, p), func(t *testing.T) {
				d, err := e.Decide(ctx, Input{Caller: frontend, Target: payments, Method: "GET", Path: p})
				if err != nil {
					t.Fatal(err)
				}
				cleaned, _ := cleanPath(p)
				goOK := grant.MatchPath(pattern, cleaned)
				if d.Allowed != goOK {
					t.Errorf("Rego allowed = %v, Go MatchPath = %v (reasons %v)", d.Allowed, goOK, d.Reasons)
				}
			})
		}
	}
}

// Decide combines the parts of the built-in decision in Go; the Rego rule
// data.kith.authz.allow (which policy tests use) must say the same.
func TestDecideAgreesWithRegoAllow(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, Config{})
	if err := e.SetPolicy(ctx, "r", map[string]string{"ext.rego": extPolicy}); err != nil {
		t.Fatal(err)
	}
	err := e.SetData(ctx, Data{
		Grants: []Grant{
			{ID: "g1", Caller: devX.String(), Target: payments.String()},
			{ID: "g2", Caller: "spiffe://example.org/ns/prod/*", Target: payments.String(), Methods: []string{"GET"}, Paths: []string{"/api/*"}},
			{ID: "g3", Caller: frontend.String(), Target: "spiffe://example.org/*", ExpiresAt: t0},
		},
		Labels: map[string]map[string]string{devX.String(): {"env": "dev"}, payments.String(): {"env": "prod"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	pq, err := rego.New(rego.Query("data.kith.authz.allow"), rego.Store(e.store),
		rego.ParsedModule(builtinParsed), rego.Module("ext.rego", extPolicy)).PrepareForEval(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, caller := range []string{"", devX.String(), frontend.String(), devilX.String()} {
		for _, target := range []string{payments.String(), devX.String(), frontend.String()} {
			for _, mp := range [][2]string{{"GET", "/api/x"}, {"POST", "/api/x"}, {"GET", "/healthz"}, {"DELETE", "/"}} {
				in := Input{Target: mustID(target), Method: mp[0], Path: mp[1]}
				if caller != "" {
					in.Caller = mustID(caller)
				}
				t.Run(fmt.Sprintf("%s calling %s with %s %s", caller, target, mp[0], mp[1]), func(t *testing.T) {
					d := decide(t, e, in)
					v, err := e.input(in, in.Path, t0, allInput)
					if err != nil {
						t.Fatal(err)
					}
					rs, err := pq.Eval(ctx, rego.EvalParsedInput(v))
					if err != nil {
						t.Fatal(err)
					}
					if diff := cmp.Diff(rs[0].Expressions[0].Value, d.PolicyAllowed); diff != "" {
						t.Errorf("data.kith.authz.allow vs Decide (-rego +decide):\n%s\nreasons: %v", diff, d.Reasons)
					}
				})
			}
		}
	}
}

func TestNeedsOf(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want inputNeeds
	}{
		{"the built-in policy needs only input.kith", "", inputNeeds{}},
		{"a policy reading attributes needs them", "package p\n\nx if input.attributes.request.http.method == \"GET\"\n", inputNeeds{attributes: true}},
		{"a policy reading parsed_path needs it", "package p\n\nx if input.parsed_path[0] == \"api\"\n", inputNeeds{parsedPath: true}},
		{"a policy reading the whole input needs everything", "package p\n\nx := input\n", allInput},
		{"a policy indexing the input with a variable needs everything", "package p\n\nx contains k if input[k]\n", allInput},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mods := map[string]*ast.Module{"b": builtinParsed}
			if tt.src != "" {
				mods["p"] = ast.MustParseModuleWithOpts(tt.src, ast.ParserOptions{RegoVersion: ast.RegoV1})
			}
			c := ast.NewCompiler()
			if c.Compile(mods); c.Failed() {
				t.Fatal(c.Errors)
			}
			if diff := cmp.Diff(tt.want, needsOf(c.Modules), cmp.AllowUnexported(inputNeeds{})); diff != "" {
				t.Errorf("needsOf (-want +got):\n%s", diff)
			}
		})
	}
}
