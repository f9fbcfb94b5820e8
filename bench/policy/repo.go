package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// SerialHeader is the header the generated policy adds to an allowed health check (GET ProbePath): the
// serial of the target service's module, which is the number of the last commit that changed it.
const SerialHeader = "x-policy-serial"

// ProbeCaller and ProbePath make the request the benchmark asks agents about: package kith.ext allows
// it without a grant, so the answer carries SerialHeader.
const (
	ProbeCaller = "spiffe://example.org/ns/bench/sa/client"
	ProbePath   = "/healthz"
)

// policyRepo is a generated policy repository: package kith.ext (ext.rego) combines the denials of n
// service modules (package kith.ext.services.svcNNN, one per file, each with its own tests) and sets
// SerialHeader; policy/data.json holds grants and labels for the services.
type policyRepo struct {
	Dir     string // the work tree; the policy is under policy/
	modules int
}

// newPolicyRepo writes the repository into dir (which must exist) and makes its first commit, serial 0.
func newPolicyRepo(dir string, modules int) (*policyRepo, string, error) {
	if modules < 1 {
		return nil, "", fmt.Errorf("want at least 1 module, got %d", modules)
	}
	r := &policyRepo{Dir: dir, modules: modules}
	if _, err := r.git("init", "-q", "-b", "main"); err != nil {
		return nil, "", err
	}
	files := map[string]string{"policy/ext.rego": extModule, "policy/ext_test.rego": extTest}
	for i := range modules {
		name := serviceName(i)
		files["policy/services/"+name+".rego"] = serviceModule(i, 0)
		files["policy/services/"+name+"_test.rego"] = serviceTest(i)
	}
	data, err := dataFile(modules)
	if err != nil {
		return nil, "", err
	}
	files["policy/data.json"] = data
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, "", err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return nil, "", err
		}
	}
	sha, err := r.commit("policy: generated", ".")
	return r, sha, err
}

// bump makes commit number serial: it sets serial in one service module (they take turns), so that a
// health check of target (that service) answers SerialHeader serial.
func (r *policyRepo) bump(serial int) (sha, target string, err error) {
	i := (serial - 1) % r.modules
	name := "policy/services/" + serviceName(i) + ".rego"
	if err := os.WriteFile(filepath.Join(r.Dir, filepath.FromSlash(name)), []byte(serviceModule(i, serial)), 0o644); err != nil {
		return "", "", err
	}
	sha, err = r.commit(fmt.Sprintf("%s: serial %d", serviceName(i), serial), name)
	return sha, serviceID(i), err
}

func (r *policyRepo) commit(msg, path string) (string, error) {
	if _, err := r.git("add", "--", path); err != nil {
		return "", err
	}
	if _, err := r.git("commit", "-q", "-m", msg); err != nil {
		return "", err
	}
	return r.git("rev-parse", "HEAD")
}

func (r *policyRepo) git(args ...string) (string, error) {
	cmd := exec.Command("git", append([]string{"-c", "user.email=bench@example.org", "-c", "user.name=bench", "-c", "commit.gpgsign=false"}, args...)...)
	cmd.Dir = r.Dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

func serviceName(i int) string { return fmt.Sprintf("svc%03d", i) }

func team(i int) string { return fmt.Sprintf("team%02d", i%20) }

func serviceID(i int) string {
	return fmt.Sprintf("spiffe://example.org/ns/%s/sa/%s", team(i), serviceName(i))
}

const extModule = `# Kith evaluates package kith.ext on every request, together with its built-in grant check.
package kith.ext

import data.kith.ext.services

# The service a request is for: the last segment of the target's SPIFFE ID (ns/<team>/sa/<service>).
target_service := name if {
	parts := split(input.kith.target.id, "/")
	name := parts[count(parts) - 1]
}

# The target service's own module decides its denials.
deny contains reason if {
	some reason in services[target_service].deny
}

# Health checks need no grant.
allow if {
	input.kith.method == "GET"
	input.kith.path == "/healthz"
}

# Health checks report which commit last changed the target service's rules.
headers["x-policy-serial"] := sprintf("%d", [services[target_service].serial]) if input.kith.path == "/healthz"
`

const extTest = `package kith.ext_test

import data.kith.ext

health := {"kith": {"method": "GET", "path": "/healthz", "caller": {"id": "", "labels": {}}, "target": {"id": "spiffe://example.org/ns/team00/sa/svc000", "labels": {}}}}

test_health_checks_are_allowed if {
	ext.allow with input as health
}

test_health_checks_report_the_serial if {
	regex.match("^[0-9]+$", ext.headers["x-policy-serial"]) with input as health
}

test_other_requests_do_not if {
	not ext.headers["x-policy-serial"] with input as object.union(health, {"kith": {"path": "/api/v1/items"}})
}

test_service_denials_are_combined if {
	count(ext.deny) > 0 with input as {"kith": {"method": "POST", "path": "/admin/reset", "caller": {"id": "spiffe://example.org/ns/other/sa/x", "labels": {}}, "target": {"id": "` + "spiffe://example.org/ns/team00/sa/svc000" + `", "labels": {}}}}
}
`

// serviceModule is the policy of service i; the four variants read different parts of the input.
func serviceModule(i, serial int) string {
	name, id := serviceName(i), serviceID(i)
	var b strings.Builder
	fmt.Fprintf(&b, `# Rules for %[1]s, owned by %[2]s.
package kith.ext.services.%[1]s

target := %[3]q

# serial is the number of the last commit that changed this module.
serial := %[4]d

admins := {"spiffe://example.org/ns/%[2]s/sa/ops", "spiffe://example.org/ns/platform/sa/deployer"}

read_methods := {"GET", "HEAD", "OPTIONS"}

for_me if input.kith.target.id == target

is_admin(id) if id in admins

is_admin(id) if startswith(id, "spiffe://example.org/ns/platform/")

writes if not input.kith.method in read_methods

deny contains sprintf("%[1]s: only admins may %%s %%s", [input.kith.method, input.kith.path]) if {
	for_me
	writes
	startswith(input.kith.path, "/admin/")
	not is_admin(input.kith.caller.id)
}
`, name, team(i), id, serial)
	switch i % 4 {
	case 0:
		fmt.Fprintf(&b, `
deny contains "%[1]s: production is changed from production only" if {
	for_me
	writes
	input.kith.target.labels.env == "prod"
	caller_env := object.get(input.kith.caller.labels, "env", "none")
	caller_env != "prod"
}
`, name)
	case 1:
		fmt.Fprintf(&b, `
max_body := %[2]d

content_length := to_number(n) if {
	n := input.attributes.request.http.headers["content-length"]
	regex.match("^[0-9]{1,12}$", n)
}

deny contains sprintf("%[1]s: body of %%d bytes is over %%d", [content_length, max_body]) if {
	for_me
	content_length > max_body
}
`, name, (i+1)*4096)
	case 2:
		fmt.Fprintf(&b, `
exports := ["/api/v1/*/export", "/api/v2/*/export"]

is_export if {
	some pattern in exports
	glob.match(pattern, ["/"], input.kith.path)
}

deny contains "%[1]s: exports are for the %[2]s team" if {
	for_me
	is_export
	not startswith(input.kith.caller.id, "spiffe://example.org/ns/%[2]s/")
}
`, name, team(i))
	case 3:
		fmt.Fprintf(&b, `
deny contains "%[1]s: every call needs a request id" if {
	for_me
	headers := object.get(input.attributes, ["request", "http", "headers"], {})
	not headers["x-request-id"]
	count(headers) > 0
}
`, name)
	}
	return b.String()
}

func serviceTest(i int) string {
	name, id := serviceName(i), serviceID(i)
	in := func(method, path, caller string) string {
		return fmt.Sprintf(`{"kith": {"method": %q, "path": %q, "caller": {"id": %q, "labels": {}}, "target": {"id": %q, "labels": {}}}}`,
			method, path, caller, id)
	}
	stranger := "spiffe://example.org/ns/elsewhere/sa/stranger"
	return fmt.Sprintf(`package kith.ext.services.%[1]s_test

import data.kith.ext.services.%[1]s

test_admin_paths_are_for_admins if {
	count(%[1]s.deny) == 1 with input as %[2]s
}

test_platform_may_use_admin_paths if {
	count(%[1]s.deny) == 0 with input as %[3]s
}

test_reads_are_not_denied if {
	count(%[1]s.deny) == 0 with input as %[4]s
}

test_other_services_are_not_governed if {
	not %[1]s.for_me with input as {"kith": {"method": "POST", "path": "/admin/x", "caller": {"id": %[5]q, "labels": {}}, "target": {"id": "spiffe://example.org/ns/x/sa/y", "labels": {}}}}
}
`, name, in("POST", "/admin/reset", stranger), in("POST", "/admin/reset", "spiffe://example.org/ns/platform/sa/deployer"),
		in("GET", "/api/v1/items", stranger), stranger)
}

// dataFile grants each service's team ops identity GET on it, and labels every fourth service prod.
func dataFile(modules int) (string, error) {
	type grant struct {
		Caller  string   `json:"caller"`
		Target  string   `json:"target"`
		Methods []string `json:"methods"`
		Paths   []string `json:"paths"`
		Reason  string   `json:"reason"`
	}
	var d struct {
		Grants []grant                      `json:"grants"`
		Labels map[string]map[string]string `json:"labels"`
	}
	d.Labels = map[string]map[string]string{}
	for i := range modules {
		d.Grants = append(d.Grants, grant{Caller: "spiffe://example.org/ns/" + team(i) + "/sa/ops", Target: serviceID(i),
			Methods: []string{"GET"}, Paths: []string{"/api/*"}, Reason: "ops reads " + serviceName(i)})
		if i%4 == 0 {
			d.Labels[serviceID(i)] = map[string]string{"env": "prod"}
		}
	}
	raw, err := json.MarshalIndent(d, "", "  ")
	return string(raw) + "\n", err
}
