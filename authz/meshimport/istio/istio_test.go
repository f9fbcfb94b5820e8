package istio_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/authz/meshimport"
	"github.com/kithid/kith/authz/meshimport/istio"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// workloads are the registered identities label selectors choose from.
var workloads = []meshimport.Workload{
	meshimport.WorkloadOf("spiffe://example.org/ns/foo/sa/httpbin", map[string]string{"app": "httpbin", "version": "v1"}),
	meshimport.WorkloadOf("spiffe://example.org/ns/foo/sa/sleep", map[string]string{"app": "sleep"}),
	meshimport.WorkloadOf("spiffe://example.org/ns/bar/sa/httpbin", map[string]string{"app": "httpbin"}),
}

// istioDefault stands for Istio's "no ALLOW policy selects the workload: allow": Kith denies what no grant
// allows, so the examples whose Istio answer relies on that default are checked with this grant present.
var istioDefault = grant.Grant{ID: "base", Caller: "spiffe://example.org/*", Target: "spiffe://example.org/*"}

type request struct {
	caller, target, method, path string
	port                         uint32
	allow                        bool
}

func convert(t *testing.T, skip bool, files ...string) (*meshimport.Result, error) {
	t.Helper()
	var objs []meshimport.Object
	for _, f := range files {
		o, err := meshimport.ReadPath(filepath.Join("testdata", f), nil)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o...)
	}
	ps, ignored, err := istio.Parse(objs)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(ignored) > 0 {
		t.Fatalf("Parse ignored %v", ignored)
	}
	return istio.Convert(ps, meshimport.Options{TrustDomain: td, Workloads: workloads, SkipUnsupported: skip})
}

func check(t *testing.T, res *meshimport.Result, base bool, reqs []request) {
	t.Helper()
	e, err := authz.New(authz.Config{})
	if err != nil {
		t.Fatal(err)
	}
	gs := res.Grants
	if base {
		gs = append(gs, istioDefault)
	}
	if err := e.SetData(context.Background(), authz.Data{Grants: gs}); err != nil {
		t.Fatal(err)
	}
	for _, r := range reqs {
		d, err := e.Decide(context.Background(), authz.Input{Caller: spiffeid.RequireFromString("spiffe://example.org/" + r.caller),
			Target: spiffeid.RequireFromString("spiffe://example.org/" + r.target), Method: r.method, Path: r.path, Port: r.port})
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed != r.allow {
			t.Errorf("%s → %s %s %s port %d: allowed %v, want %v (%s)", r.caller, r.target, r.method, r.path, r.port, d.Allowed, r.allow, strings.Join(d.Reasons, "; "))
		}
	}
}

const (
	httpbin    = "ns/foo/sa/httpbin"
	barHttpbin = "ns/bar/sa/httpbin"
	sleep      = "ns/default/sa/sleep"
	fooSleep   = "ns/foo/sa/sleep"
	testNS     = "ns/test/sa/t"
	devNS      = "ns/dev/sa/x"
)

func TestReferenceExamples(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		skip    bool
		base    bool
		reqs    []request
		skipped string // in Result.Skipped
	}{
		{"1: an ALLOW rule with a when condition is skipped whole, so nothing is allowed", "reference-1.yaml", true, false, []request{
			{sleep, httpbin, "GET", "/info", 0, false}, {testNS, httpbin, "POST", "/data", 0, false},
		}, "skipped AuthorizationPolicy foo/httpbin: spec.rules[0].when: conditions on request attributes"},
		{"2: DENY POST from namespace dev", "reference-2.yaml", false, true, []request{
			{devNS, httpbin, "POST", "/x", 0, false}, {devNS, fooSleep, "POST", "/x", 0, false}, {devNS, httpbin, "GET", "/x", 0, true},
			{testNS, httpbin, "POST", "/x", 0, true}, {devNS, barHttpbin, "POST", "/x", 0, true},
		}, ""},
		{"3: DENY POST on port 8080", "reference-3.yaml", false, true, []request{
			{testNS, httpbin, "POST", "/", 8080, false}, {testNS, httpbin, "POST", "/", 9090, true}, {testNS, httpbin, "GET", "/", 8080, true},
		}, ""},
		{"4: AUDIT is skipped", "reference-4.yaml", true, true, []request{{testNS, httpbin, "GET", "/user/profile/x", 0, true}},
			"skipped AuthorizationPolicy ns1/anyname: spec.action: AUDIT"},
		{"5: allow-nothing in foo", "reference-5.yaml", false, false, []request{{sleep, httpbin, "GET", "/", 0, false}},
			"AuthorizationPolicy foo/allow-nothing has no rules: it allows nothing"},
		{"6: allow-all in foo", "reference-6.yaml", false, false, []request{
			{sleep, httpbin, "GET", "/", 0, true}, {devNS, fooSleep, "DELETE", "/x", 0, true}, {sleep, barHttpbin, "GET", "/", 0, false},
		}, ""},
		{"7: allow-nothing for app httpbin in bar", "reference-7.yaml", false, false, []request{{sleep, barHttpbin, "GET", "/", 0, false}},
			"AuthorizationPolicy bar/allow-nothing has no rules"},
		{"8: allow-nothing for version v1 in every namespace", "reference-8.yaml", false, false, []request{{sleep, httpbin, "GET", "/", 0, false}},
			"AuthorizationPolicy istio-system/allow-nothing has no rules"},
		{"9: a dry-run policy is not enforced", "reference-9.yaml", false, true, []request{{sleep, httpbin, "GET", "/headers", 0, true}},
			`annotated istio.io/dry-run: "true"`},
		{"10: CUSTOM is skipped", "reference-10.yaml", true, false, nil, "skipped AuthorizationPolicy istio-system/ext-authz: spec.action: CUSTOM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := convert(t, tt.skip, tt.file)
			if err != nil {
				t.Fatal(err)
			}
			if tt.skipped != "" && !strings.Contains(strings.Join(res.Skipped, "\n"), tt.skipped) {
				t.Errorf("Skipped = %q, want %q in it", res.Skipped, tt.skipped)
			}
			check(t, res, tt.base, tt.reqs)
		})
	}
}

func TestReferenceExample1WithoutItsCondition(t *testing.T) {
	// Example 1's from and to, without the when that Kith cannot check: sleep of default or namespace
	// test may GET /info* and POST /data of every workload in foo.
	objs, err := meshimport.ReadPath(filepath.Join("testdata", "reference-1.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ps, _, err := istio.Parse(objs)
	if err != nil {
		t.Fatal(err)
	}
	ps[0].Spec.Rules[0].When = nil
	res, err := istio.Convert(ps, meshimport.Options{TrustDomain: td, Workloads: workloads})
	if err != nil {
		t.Fatal(err)
	}
	check(t, res, false, []request{
		{sleep, httpbin, "GET", "/info", 0, true}, {sleep, httpbin, "GET", "/infox/y", 0, true}, {testNS, fooSleep, "POST", "/data", 0, true},
		{sleep, httpbin, "POST", "/info", 0, false}, {sleep, httpbin, "GET", "/data", 0, false}, {sleep, httpbin, "POST", "/data/x", 0, false},
		{fooSleep, httpbin, "GET", "/info", 0, false}, {sleep, barHttpbin, "GET", "/info", 0, false},
	})
}

func TestExplicitDenyTask(t *testing.T) {
	// Step 1: deny-method-get alone; Istio allows the rest (no ALLOW policy), Kith with the default grant.
	res, err := convert(t, false, "task-authz-deny-1.yaml")
	if err != nil {
		t.Fatal(err)
	}
	check(t, res, true, []request{{fooSleep, httpbin, "GET", "/get", 0, false}, {fooSleep, httpbin, "POST", "/post", 0, true}})
	// The when on a header is refused, naming it.
	_, err = convert(t, false, "task-authz-deny-2.yaml")
	var u *meshimport.Unsupported
	if !errors.As(err, &u) || u.Object != "AuthorizationPolicy foo/deny-method-get" || u.Field != "spec.rules[0].when" {
		t.Errorf("the when condition: %v, want it refused", err)
	}
	// deny-method-get with allow-path-ip: the workload is default-deny in Istio now, as in Kith.
	res, err = convert(t, false, "task-authz-deny-1.yaml", "task-authz-deny-3.yaml")
	if err != nil {
		t.Fatal(err)
	}
	check(t, res, false, []request{
		{fooSleep, httpbin, "GET", "/ip", 0, false}, // deny policies take precedence over allow policies
		{fooSleep, httpbin, "POST", "/ip", 0, true},
		{fooSleep, httpbin, "GET", "/get", 0, false},
		{fooSleep, httpbin, "POST", "/get", 0, false}, // matches no ALLOW policy
	})
}

func TestUnsupportedFieldsAreRefusedNamingThem(t *testing.T) {
	for _, tt := range []struct{ name, spec, field, why string }{
		{"request principals", `rules: [{from: [{source: {requestPrincipals: ["*"]}}]}]`, "spec.rules[0].from[0].source.requestPrincipals", "JWT"},
		{"ip blocks", `rules: [{from: [{source: {ipBlocks: ["10.0.0.0/8"]}}]}]`, "spec.rules[0].from[0].source.ipBlocks", "addresses"},
		{"hosts", `rules: [{to: [{operation: {hosts: ["*.example.com"]}}]}]`, "spec.rules[0].to[0].operation.hosts", "host names"},
		{"notPorts", `rules: [{to: [{operation: {notPorts: ["80"]}}]}]`, "spec.rules[0].to[0].operation.notPorts", "ports"},
		{"targetRefs", `targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]`, "spec.targetRefs", "selector"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := meshimport.Read("x.yaml", []byte("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo}\nspec:\n  "+tt.spec+"\n"))
			if err != nil {
				t.Fatal(err)
			}
			ps, _, err := istio.Parse(objs)
			if err != nil {
				t.Fatal(err)
			}
			_, err = istio.Convert(ps, meshimport.Options{TrustDomain: td})
			var u *meshimport.Unsupported
			if !errors.As(err, &u) || u.Field != tt.field || !strings.Contains(u.Why, tt.why) {
				t.Fatalf("Convert = %v, want %s refused (%s)", err, tt.field, tt.why)
			}
			res, err := istio.Convert(ps, meshimport.Options{TrustDomain: td, SkipUnsupported: true})
			if err != nil || len(res.Grants) != 0 || len(res.Skipped) != 1 || !strings.Contains(res.Skipped[0], tt.field) {
				t.Errorf("with skip: %v, %+v; want the rule skipped and listed", err, res)
			}
		})
	}
}

func TestPrincipalsNamespacesAndExceptions(t *testing.T) {
	objs, err := meshimport.Read("x.yaml", []byte(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: DENY
  rules:
  - from: [{source: {notNamespaces: [foo]}}]
    to: [{operation: {notPaths: ["/healthz"], notMethods: [HEAD]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a, namespace: foo}
spec:
  rules:
  - from: [{source: {principals: ["cluster.local/ns/prod/*", "spiffe.other/ns/x/sa/y"], namespaces: [prod, test]}}]
    to: [{operation: {paths: ["*.json", "/exact", "/pre/*"]}}]
`))
	if err != nil {
		t.Fatal(err)
	}
	ps, _, err := istio.Parse(objs)
	if err != nil {
		t.Fatal(err)
	}
	res, err := istio.Convert(ps, meshimport.Options{TrustDomain: td, Workloads: workloads})
	if err != nil {
		t.Fatal(err)
	}
	check(t, res, true, []request{
		{devNS, httpbin, "GET", "/x", 0, false}, {devNS, httpbin, "GET", "/healthz", 0, true}, {devNS, httpbin, "HEAD", "/x", 0, true},
		{fooSleep, httpbin, "GET", "/x", 0, true},
	})
	check(t, res, false, []request{
		{"ns/prod/sa/a", fooSleep, "GET", "/a/b.json", 0, true}, {"ns/prod/sa/a", fooSleep, "GET", "/exact", 0, true},
		{"ns/prod/sa/a", fooSleep, "GET", "/pre/x", 0, true}, {"ns/prod/sa/a", fooSleep, "GET", "/other", 0, false},
		{testNS, fooSleep, "GET", "/exact", 0, false}, // namespace test, but not a principal
	})
}
