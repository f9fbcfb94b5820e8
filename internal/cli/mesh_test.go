package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestImportSMIThenIstio(t *testing.T) {
	s := startServer(t, t.TempDir())
	dir := t.TempDir()
	smiData := filepath.Join("..", "..", "authz", "meshimport", "smi", "testdata")
	copyFile(t, filepath.Join(smiData, "traffic-access-v1alpha4-4.yaml"), filepath.Join(dir, "l7.yaml"))
	copyFile(t, filepath.Join(smiData, "identitybindings-v1alpha4.yaml"), filepath.Join(dir, "bindings.yaml"))
	sa := func(name string) string { return "spiffe://example.org/ns/default/sa/" + name }
	can := func(args ...string) (string, int) {
		out, errs, code := s.kith(t, append([]string{"can"}, args...)...)
		return out + errs, code
	}

	out := s.ok(t, "import", "smi", dir, "--dry-run")
	if !strings.Contains(out, "dry run: 3 added, 0 changed, 0 removed; nothing changed") || !strings.Contains(out, "+ grant smi-") {
		t.Errorf("import --dry-run = %q", out)
	}
	if _, code := can(sa("prometheus"), sa("api-service"), "--path", "/metrics", "--port", "8080"); code != 1 {
		t.Errorf("a dry run changed the grants")
	}
	out = s.ok(t, "import", "smi", dir)
	if !strings.Contains(out, "smi: 3 added, 0 changed, 0 removed; in force from revision") || !strings.Contains(out, "TrafficTarget default/api-service-metrics: 1 grants") {
		t.Errorf("import = %q", out)
	}
	out, code := can(sa("prometheus"), sa("api-service"), "--path", "/metrics", "--port", "8080")
	if code != 0 || !strings.Contains(out, "allowed by smi default/api-service-metrics, route metrics") {
		t.Errorf("can prometheus GET /metrics: exit %d, %q; want allowed naming the TrafficTarget and route", code, out)
	}
	if out, code := can(sa("prometheus"), sa("api-service"), "--path", "/api", "--port", "8080"); code != 1 || !strings.Contains(out, "does not allow path /api") {
		t.Errorf("can prometheus GET /api: exit %d, %q; want denied", code, out)
	}
	if out := s.ok(t, "import", "smi", dir); !strings.Contains(out, "already in force; nothing changed") {
		t.Errorf("the same import again = %q", out)
	}
	if out := s.ok(t, "grants", "list", "--source", "smi:default/api-service-api"); strings.Count(out, "smi:default/api-service-api") != 2 {
		t.Errorf("grants list --source = %q, want the two grants of api-service-api", out)
	}
	_, errs, code := s.kith(t, "revoke", strings.Fields(s.ok(t, "grants", "list", "--source", "smi:"))[8])
	if code == 0 || !strings.Contains(errs, "import the policy again without it") {
		t.Errorf("revoking an imported grant: exit %d, %q", code, errs)
	}

	// A file taken out of the directory revokes its grants: here the bindings, which the TrafficTargets
	// then miss, so the import is refused naming them, and nothing changes.
	if err := os.Remove(filepath.Join(dir, "bindings.yaml")); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := s.kith(t, "import", "smi", dir); code == 0 || !strings.Contains(errs, "IdentityBinding default/api-service is missing") {
		t.Errorf("import without the bindings: exit %d, %q", code, errs)
	}
	if err := os.WriteFile(filepath.Join(dir, "l7.yaml"), []byte("# nothing\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := s.ok(t, "import", "smi", dir); !strings.Contains(out, "0 added, 0 changed, 3 removed") {
		t.Errorf("import of an empty directory = %q", out)
	}
	if _, code := can(sa("prometheus"), sa("api-service"), "--path", "/metrics", "--port", "8080"); code != 1 {
		t.Errorf("the grants of a removed TrafficTarget still allow")
	}

	// Istio: an ALLOW and a DENY from standard input; the deny wins and is named.
	policy := `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-sleep, namespace: foo}
spec:
  rules: [{from: [{source: {principals: [cluster.local/ns/foo/sa/sleep]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: foo}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
`
	out, errs, code = s.kithIn(t, policy, "import", "istio", "-")
	if code != 0 || !strings.Contains(out, "istio: 2 added") {
		t.Fatalf("import istio -: exit %d, %q %q", code, out, errs)
	}
	sleep, httpbin := "spiffe://example.org/ns/foo/sa/sleep", "spiffe://example.org/ns/foo/sa/httpbin"
	if out, code := can(sleep, httpbin, "--path", "/get"); code != 0 || !strings.Contains(out, "allowed by istio foo/allow-sleep, rules[0]") {
		t.Errorf("can sleep GET /get: exit %d, %q", code, out)
	}
	if out, code := can(sleep, httpbin, "--path", "/admin/users"); code != 1 || !strings.Contains(out, "denied by istio foo/deny-admin, rules[0]") {
		t.Errorf("can sleep GET /admin/users: exit %d, %q; want denied naming the DENY policy", code, out)
	}
	out, errs, code = s.kithIn(t, "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo}\nspec:\n  rules: [{when: [{key: \"request.auth.claims[iss]\", values: [x]}]}]\n", "import", "istio", "-")
	if code == 0 || !strings.Contains(errs, "AuthorizationPolicy foo/p: spec.rules[0].when: conditions on request attributes") {
		t.Errorf("import of a when condition: exit %d, %q %q; want refused naming the field", code, out, errs)
	}
}

func TestExportThenImportKeepsTheGrants(t *testing.T) {
	s := startServer(t, t.TempDir())
	smiData := filepath.Join("..", "..", "authz", "meshimport", "smi", "testdata")
	dir := t.TempDir()
	copyFile(t, filepath.Join(smiData, "traffic-access-v1alpha4-4.yaml"), filepath.Join(dir, "l7.yaml"))
	copyFile(t, filepath.Join(smiData, "identitybindings-v1alpha4.yaml"), filepath.Join(dir, "bindings.yaml"))
	s.ok(t, "import", "smi", dir)
	s.ok(t, "grant", "spiffe://example.org/ns/a/*", "spiffe://example.org/ns/default/sa/*", "--deny", "--path", "/admin/*")
	exported := s.ok(t, "export", "smi")
	if !strings.Contains(exported, "# not exported: grant ") || !strings.Contains(exported, "a deny rule: SMI access control is additive") {
		t.Errorf("export smi = %s\nwant the deny rule listed as not exported", exported)
	}
	if !strings.Contains(exported, "kind: TrafficTarget") || !strings.Contains(exported, "name: api-service-metrics") {
		t.Errorf("export smi = %s", exported)
	}
	out, errs, code := s.kithIn(t, exported, "import", "smi", "-")
	if code != 0 || !strings.Contains(out, "already in force; nothing changed") {
		t.Errorf("import of the export: exit %d, %q %q; want the same grants", code, out, errs)
	}
	istioOut := s.ok(t, "export", "istio", "--source", "cli")
	if !strings.Contains(istioOut, "action: DENY") || !strings.Contains(istioOut, "example.org/ns/a/*") {
		t.Errorf("export istio --source cli = %s", istioOut)
	}
}
