package authz

import (
	"context"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

func BenchmarkExpMatches(b *testing.B) {
	e := benchEngine(b)
	in := Input{Caller: benchCaller(42), Target: benchTarget(500), Method: "GET", Path: "/api/v1/users"}
	v, _ := e.input(in, t0, inputNeeds{})
	variants := map[string]string{
		"a-current": `package x
import rego.v1
matches := data.kith.authz.matches`,
		"b-filter": `package x
import rego.v1
matches contains id if {
	some callers in object.filter(data.kith.grants, input.kith.target_keys)
	some grants in object.filter(callers, input.kith.caller_keys)
	some id, g in grants
	g.expires_at > input.kith.now
	object.filter(g.methods, input.kith.method_keys) != {}
	path_ok(g)
}
path_ok(g) if object.filter(g.paths, input.kith.path_keys) != {}
path_ok(g) if {
	some pattern in g.globs
	glob.match(pattern, ["/"], input.kith.path)
}`,
		"c-filter-inline": `package x
import rego.v1
matches contains id if {
	some callers in object.filter(data.kith.grants, input.kith.target_keys)
	some grants in object.filter(callers, input.kith.caller_keys)
	some id, g in grants
	g.expires_at > input.kith.now
	object.filter(g.methods, input.kith.method_keys) != {}
	object.filter(g.paths, input.kith.path_keys) != {}
}`,
	}
	for name, src := range variants {
		m := ast.MustParseModuleWithOpts(src, ast.ParserOptions{RegoVersion: ast.RegoV1})
		compiler := ast.NewCompiler().WithDefaultRegoVersion(ast.RegoV1)
		compiler.Compile(map[string]*ast.Module{"b": builtinParsed, "x": m})
		if compiler.Failed() {
			b.Fatal(compiler.Errors)
		}
		pq, err := rego.New(rego.Query("data.x.matches"), rego.Compiler(compiler), rego.Store(e.store)).PrepareForEval(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		rs, err := pq.Eval(context.Background(), rego.EvalParsedInput(v))
		b.Logf("%s: %v %v", name, rs, err)
		b.Run(name, func(b *testing.B) {
			var d []time.Duration
			for b.Loop() {
				s := time.Now()
				pq.Eval(context.Background(), rego.EvalParsedInput(v))
				d = append(d, time.Since(s))
			}
			reportPercentiles(b, d)
		})
	}
}
