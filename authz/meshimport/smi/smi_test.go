package smi_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/meshimport"
	"github.com/kithid/kith/authz/meshimport/smi"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func sa(name string) spiffeid.ID { return spiffeid.RequireFromPath(td, "/ns/default/sa/"+name) }

// request is one request the specification says is allowed or denied.
type request struct {
	caller, target string // service accounts in namespace default
	method, path   string
	headers        map[string]string
	port           uint32
	allow          bool
}

func readFiles(t *testing.T, names ...string) []meshimport.Object {
	t.Helper()
	var objs []meshimport.Object
	for _, n := range names {
		o, err := meshimport.ReadPath(filepath.Join("testdata", n), nil)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o...)
	}
	return objs
}

func importObjects(t *testing.T, objs []meshimport.Object, opts meshimport.Options) (*meshimport.Result, error) {
	t.Helper()
	p, err := smi.Parse(objs)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	opts.TrustDomain = td
	return smi.Convert(p, opts)
}

func engineWith(t *testing.T, res *meshimport.Result) *authz.Engine {
	t.Helper()
	e, err := authz.New(authz.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SetData(context.Background(), authz.Data{Grants: res.Grants}); err != nil {
		t.Fatalf("SetData: %v", err)
	}
	return e
}

func checkRequests(t *testing.T, e *authz.Engine, reqs []request) {
	t.Helper()
	for _, r := range reqs {
		d, err := e.Decide(context.Background(), authz.Input{Caller: sa(r.caller), Target: sa(r.target), Method: r.method, Path: r.path, Headers: r.headers, Port: r.port})
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed != r.allow {
			t.Errorf("%s → %s %s %s %v port %d: allowed %v, want %v (%s)", r.caller, r.target, r.method, r.path, r.headers, r.port, d.Allowed, r.allow, strings.Join(d.Reasons, "; "))
		}
	}
}

// The requests of the traffic-access examples, as the specification's text and tables say.
var (
	pathSpecific = []request{
		{"prometheus", "service-a", "GET", "/metrics", nil, 8080, true},
		{"prometheus", "service-a", "GET", "/metrics/cpu", nil, 8080, true}, // pathRegex is anchored at the start only
		{"prometheus", "service-a", "POST", "/metrics", nil, 8080, false},
		{"prometheus", "service-a", "GET", "/api", nil, 8080, false}, // the "everything" route is not in the rule's matches
		{"website-service", "service-a", "GET", "/metrics", nil, 8080, false},
	}
	l7 = []request{ // the table "The previous example would allow the following HTTP traffic"
		{"website-service", "api-service", "GET", "/api", nil, 8080, true},
		{"website-service", "api-service", "DELETE", "/api/orders", nil, 8080, true},
		{"payments-service", "api-service", "POST", "/api", nil, 8080, true},
		{"prometheus", "api-service", "GET", "/metrics", nil, 8080, true},
		{"prometheus", "api-service", "POST", "/metrics", nil, 8080, false},
		{"prometheus", "api-service", "GET", "/api", nil, 8080, false},
		{"website-service", "api-service", "GET", "/metrics", nil, 8080, false},
		{"api-service", "api-service", "GET", "/api", nil, 8080, false},
	}
	l4 = []request{ // "allow TCP and UDP traffic to both 8301 and 8302 ports"; TCP to 8300 too
		{"client", "server", "", "/", nil, 8301, true},
		{"client", "server", "", "/", nil, 8302, true},
		{"client", "server", "", "/", nil, 8300, true},
		{"client", "server", "", "/", nil, 9000, false},
		{"server", "client", "", "/", nil, 8301, false},
	}
)

func TestTrafficAccessExamples(t *testing.T) {
	withPort := func(reqs []request, port uint32, allowedOn bool) []request {
		out := append([]request(nil), reqs...)
		for _, r := range reqs {
			r.port = port
			r.allow = r.allow && allowedOn
			out = append(out, r)
		}
		return out
	}
	tests := []struct {
		name  string
		files []string
		skip  bool // --skip-unsupported
		reqs  []request
	}{
		{"v1alpha1 path-specific (destination port 8080)", []string{"traffic-access-v1alpha1-1.yaml", "traffic-access-v1alpha1-2.yaml"}, false, withPort(pathSpecific, 9090, false)},
		{"v1alpha1 L7", []string{"traffic-access-v1alpha1-3.yaml"}, false, l7},
		{"v1alpha2 path-specific (destination port 8080)", []string{"traffic-access-v1alpha2-1.yaml", "traffic-access-v1alpha2-2.yaml"}, false, withPort(pathSpecific, 9090, false)},
		{"v1alpha2 L7", []string{"traffic-access-v1alpha2-3.yaml"}, false, l7},
		{"v1alpha3 path-specific (TCPRoute port 8080)", []string{"traffic-access-v1alpha3-1.yaml", "traffic-access-v1alpha3-2.yaml"}, false, withPort(pathSpecific, 9090, false)},
		{"v1alpha3 L7 (TCPRoute port 8080)", []string{"traffic-access-v1alpha3-3.yaml"}, false, withPort(l7, 9090, false)},
		{"v1alpha3 L4", []string{"traffic-access-v1alpha3-4.yaml"}, true, l4},
		{"v1alpha4 path-specific (IdentityBinding)", []string{"traffic-access-v1alpha4-1.yaml", "traffic-access-v1alpha4-2.yaml", "traffic-access-v1alpha4-3.yaml", "identitybindings-v1alpha4.yaml"}, false, withPort(pathSpecific, 9090, false)},
		{"v1alpha4 L7", []string{"traffic-access-v1alpha4-4.yaml", "identitybindings-v1alpha4.yaml"}, false, withPort(l7, 9090, false)},
		{"v1alpha4 L4", []string{"traffic-access-v1alpha4-5.yaml", "identitybindings-v1alpha4.yaml"}, true, l4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := importObjects(t, readFiles(t, tt.files...), meshimport.Options{SkipUnsupported: tt.skip})
			if err != nil {
				t.Fatal(err)
			}
			for _, g := range res.Grants {
				if !strings.HasPrefix(g.Source, "smi:default/") || !strings.HasPrefix(g.Target, "spiffe://example.org/") {
					t.Errorf("grant %s has source %q, target %s", g.ID, g.Source, g.Target)
				}
			}
			checkRequests(t, engineWith(t, res), tt.reqs)
		})
	}
}

func TestUDPRoutesAreRefusedUnlessSkipped(t *testing.T) {
	objs := readFiles(t, "traffic-access-v1alpha3-4.yaml")
	_, err := importObjects(t, objs, meshimport.Options{})
	var u *meshimport.Unsupported
	if !errors.As(err, &u) || u.Object != "TrafficTarget default/protocal-specific" || u.Field != "rules[1]" || !strings.Contains(u.Why, "UDP") {
		t.Fatalf("Convert = %v, want the UDPRoute rule refused", err)
	}
	res, err := importObjects(t, objs, meshimport.Options{SkipUnsupported: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Skipped) != 1 || !strings.Contains(res.Skipped[0], "skipped TrafficTarget default/protocal-specific: rules[1]: UDPRoute default/udp-ports") {
		t.Errorf("Skipped = %q", res.Skipped)
	}
}

// trafficTargetFor is a TrafficTarget from prometheus to service-a over every route of the group, which
// the traffic-specs examples (route groups alone) are imported with.
func trafficTargetFor(t *testing.T, version, group, kind string) meshimport.Object {
	t.Helper()
	rules := "rules"
	body := fmt.Sprintf(`apiVersion: access.smi-spec.io/%s
kind: TrafficTarget
metadata: {name: test, namespace: default}
spec:
  destination: {kind: ServiceAccount, name: service-a, namespace: default}
  %s: [{kind: %s, name: %s}]
  sources: [{kind: ServiceAccount, name: prometheus, namespace: default}]
`, version, rules, kind, group)
	if version == "v1alpha1" {
		body = fmt.Sprintf(`apiVersion: access.smi-spec.io/v1alpha1
kind: TrafficTarget
metadata: {name: test, namespace: default}
destination: {kind: ServiceAccount, name: service-a, namespace: default}
specs: [{kind: %s, name: %s}]
sources: [{kind: ServiceAccount, name: prometheus, namespace: default}]
`, kind, group)
	}
	objs, err := meshimport.Read("test", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return objs[0]
}

func TestTrafficSpecsExamples(t *testing.T) {
	r := func(method, path string, headers map[string]string, allow bool) request {
		return request{"prometheus", "service-a", method, path, headers, 80, allow}
	}
	metricsAndHealth := []request{ // "two matches, metrics and health"
		r("GET", "/metrics", nil, true), r("POST", "/metrics", nil, false), r("GET", "/ping", nil, true), r("DELETE", "/ping", nil, true), r("GET", "/other", nil, false)}
	everything := []request{r("GET", "/", nil, true), r("PATCH", "/any/thing", nil, true)} // "a single route that matches anything"
	android := map[string]string{"user-agent": "Mozilla/5.0 (Linux; Android 14)", "cookie": "a=b;type=insider;c=d"}
	androidInsiders := []request{ // "targets Android users with a type=insider cookie"
		r("GET", "/", android, true), r("POST", "/x", android, true),
		r("GET", "/", map[string]string{"user-agent": "Mozilla/5.0 (Linux; Android 14)", "cookie": "type=outsider"}, false),
		r("GET", "/", map[string]string{"user-agent": "curl", "cookie": "type=insider"}, false)}
	firefox := map[string]string{"user-agent": "Mozilla/5.0 Firefox/120.0"}
	orFirefox := append(append([]request(nil), androidInsiders...), r("GET", "/", firefox, true), r("GET", "/", map[string]string{"user-agent": "Safari"}, false))
	iphone := map[string]string{"user-agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)"}
	iphoneUsers := []request{ // "iPhone users that are issuing GET or HEAD requests to /api"
		r("GET", "/api/users", iphone, true), r("HEAD", "/api/x", iphone, true), r("POST", "/api/users", iphone, false),
		r("GET", "/other", iphone, false), r("GET", "/api/users", firefox, false)}
	tcpAll := []request{r("", "/", nil, true), {"prometheus", "service-a", "", "/", nil, 3306, true}}
	tcpPorts := []request{{"prometheus", "service-a", "", "/", nil, 3306, true}, {"prometheus", "service-a", "", "/", nil, 6446, true}, r("", "/", nil, false)}

	type example struct {
		file, group, kind string
		reqs              []request
	}
	perVersion := map[string][]example{
		"v1alpha1": {{"1", "the-routes", "HTTPRouteGroup", metricsAndHealth}, {"2", "the-routes", "HTTPRouteGroup", everything}, {"3", "tcp-route", "TCPRoute", tcpAll}},
		"v1alpha2": {{"1", "the-routes", "HTTPRouteGroup", metricsAndHealth}, {"2", "the-routes", "HTTPRouteGroup", everything},
			{"3", "the-routes", "HTTPRouteGroup", androidInsiders}, {"4", "the-routes", "HTTPRouteGroup", orFirefox}, {"5", "the-routes", "HTTPRouteGroup", iphoneUsers}, {"6", "tcp-route", "TCPRoute", tcpAll}},
		"v1alpha3": {{"1", "the-routes", "HTTPRouteGroup", metricsAndHealth}, {"2", "the-routes", "HTTPRouteGroup", everything},
			{"3", "the-routes", "HTTPRouteGroup", androidInsiders}, {"4", "the-routes", "HTTPRouteGroup", orFirefox}, {"5", "the-routes", "HTTPRouteGroup", iphoneUsers}, {"6", "tcp-route", "TCPRoute", tcpAll}},
		"v1alpha4": {{"1", "the-routes", "HTTPRouteGroup", metricsAndHealth}, {"2", "the-routes", "HTTPRouteGroup", everything},
			{"3", "the-routes", "HTTPRouteGroup", androidInsiders}, {"4", "the-routes", "HTTPRouteGroup", orFirefox}, {"5", "the-routes", "HTTPRouteGroup", iphoneUsers},
			{"6", "the-routes", "TCPRoute", tcpPorts}, {"7", "the-routes", "TCPRoute", tcpAll}, {"8", "the-routes", "UDPRoute", nil}, {"9", "the-routes", "UDPRoute", nil}},
	}
	seen := 0
	for _, v := range smi.Versions {
		for _, ex := range perVersion[v] {
			file := fmt.Sprintf("traffic-specs-%s-%s.yaml", v, ex.file)
			seen++
			t.Run(file, func(t *testing.T) {
				objs := append(readFiles(t, file), trafficTargetFor(t, v, ex.group, ex.kind))
				res, err := importObjects(t, objs, meshimport.Options{SkipUnsupported: ex.kind == "UDPRoute"})
				if err != nil {
					t.Fatal(err)
				}
				if ex.kind == "UDPRoute" {
					if len(res.Grants) != 0 || len(res.Skipped) == 0 {
						t.Errorf("a UDPRoute gave grants %v, skipped %q", res.Grants, res.Skipped)
					}
					return
				}
				checkRequests(t, engineWith(t, res), ex.reqs)
			})
		}
	}
	files, _ := filepath.Glob("testdata/traffic-specs-*.yaml")
	if seen != len(files) {
		t.Errorf("tested %d traffic-specs examples, testdata has %d", seen, len(files))
	}
}

func TestMissingGroupsRoutesAndBindingsAreNamed(t *testing.T) {
	for _, tt := range []struct {
		name, yaml, want string
	}{
		{"a missing group", `
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: tt, namespace: prod}
spec:
  destination: {kind: ServiceAccount, name: api}
  rules: [{kind: HTTPRouteGroup, name: routes, matches: [metrics]}]
  sources: [{kind: ServiceAccount, name: prometheus}]
`, "TrafficTarget prod/tt: rules[0]: HTTPRouteGroup prod/routes is missing"},
		{"a missing route", `
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: routes, namespace: prod}
spec: {matches: [{name: api, pathRegex: /api}]}
---
apiVersion: access.smi-spec.io/v1alpha4
kind: TrafficTarget
metadata: {name: tt, namespace: prod}
spec:
  destination: {kind: ServiceAccount, name: api}
  rules: [{kind: HTTPRouteGroup, name: routes, matches: [metrics]}]
  sources: [{kind: ServiceAccount, name: prometheus}]
`, `TrafficTarget prod/tt: rules[0]: route "metrics" is missing from HTTPRouteGroup prod/routes (it has api)`},
		{"a missing identity binding", `
apiVersion: access.smi-spec.io/v1alpha4
kind: TrafficTarget
metadata: {name: tt, namespace: prod}
spec:
  destination: {kind: IdentityBinding, name: api}
  rules: [{kind: TCPRoute, name: r}]
  sources: [{kind: ServiceAccount, name: prometheus}]
`, "TrafficTarget prod/tt: destination: IdentityBinding prod/api is missing"},
		{"a method Kith does not know", `
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: routes, namespace: prod}
spec: {matches: [{name: api, methods: [FETCH]}]}
---
apiVersion: access.smi-spec.io/v1alpha4
kind: TrafficTarget
metadata: {name: tt, namespace: prod}
spec:
  destination: {kind: ServiceAccount, name: api}
  rules: [{kind: HTTPRouteGroup, name: routes}]
  sources: [{kind: ServiceAccount, name: prometheus}]
`, `TrafficTarget prod/tt: route api: invalid grant`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := meshimport.Read("test.yaml", []byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			_, err = importObjects(t, objs, meshimport.Options{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Convert = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestParseRefusesUnknownFieldsAndVersions(t *testing.T) {
	for _, tt := range []struct{ name, yaml, want string }{
		{"an unknown spec field", "apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {name: x}\nspec: {destination: {kind: ServiceAccount, name: a}, sourcez: []}\n", `unknown field "sourcez"`},
		{"an unknown version", "apiVersion: access.smi-spec.io/v1beta1\nkind: TrafficTarget\nmetadata: {name: x}\nspec: {}\n", "apiVersion access.smi-spec.io/v1beta1: Kith reads"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := meshimport.Read("x.yaml", []byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := smi.Parse(objs); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestImportIsStable(t *testing.T) {
	objs := readFiles(t, "traffic-access-v1alpha4-4.yaml", "identitybindings-v1alpha4.yaml")
	a, err := importObjects(t, objs, meshimport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The same objects in another order give the same grants, with the same IDs.
	rev := append([]meshimport.Object(nil), objs...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	b, err := importObjects(t, rev, meshimport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a.Grants, b.Grants); diff != "" {
		t.Errorf("grants differ with the order of the objects (-first +second):\n%s", diff)
	}
	if _, err := os.Stat("testdata"); err != nil {
		t.Fatal(err)
	}
}
