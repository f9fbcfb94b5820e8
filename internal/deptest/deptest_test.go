package deptest

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/kithid/kith"

// pkg is what `go list -json` says of one package.
type pkg struct {
	ImportPath string
	Name       string
	Standard   bool
	Imports    []string
	Module     *struct{ Path string }
}

// list runs `go list -json` with args from the module root.
func list(t *testing.T, args ...string) []pkg {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-e", "-json=ImportPath,Name,Standard,Imports,Module"}, args...)...)
	cmd.Dir = "../.."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// rel is a module package's path relative to the module root ("" for other modules).
func rel(path string) (string, bool) {
	if path == module {
		return ".", true
	}
	r, ok := strings.CutPrefix(path, module+"/")
	return r, ok
}

// under reports whether a module-relative path is dir or below it.
func under(path string, dirs ...string) bool {
	for _, d := range dirs {
		if path == d || strings.HasPrefix(path, d+"/") {
			return true
		}
	}
	return false
}

// isInternal reports whether a module-relative path has an internal element.
func isInternal(path string) bool {
	return slices.Contains(strings.Split(path, "/"), "internal")
}

// confined lists third-party modules that only the named module directories may import directly.
// Directories that do not exist yet are where the capability is planned to live.
var confined = []struct {
	prefix  string   // import path prefix of the dependency
	allowed []string // module-relative directories that may import it
	why     string
}{
	{"github.com/open-policy-agent/opa", []string{"authz"}, "OPA is the authorization engine's business"},
	{"github.com/envoyproxy/go-control-plane", []string{"sds", "authz/extauthz", "authz/middleware"},
		"Envoy's protocols are spoken by the SDS and ext_authz servers (and the ext_authz client middleware)"},
	{"k8s.io/", []string{"attestation/node/k8spsat", "attestation/workload/k8s", "internal/kubernetes"}, "Kubernetes is reached through its own packages"},
	{"sigs.k8s.io/", []string{"attestation/node/k8spsat", "attestation/workload/k8s", "internal/kubernetes"}, "Kubernetes is reached through its own packages"},
	{"github.com/hashicorp/vault", []string{"ca/upstream/vault", "ca/upstream/upstreamtest"}, "Vault is one upstream authority (and upstreamtest provisions a real one for its tests)"},
	{"github.com/openbao/", []string{"ca/upstream/vault"}, "OpenBao is one upstream authority"},
	{"github.com/smallstep/certificates", []string{"ca/upstream/stepca"}, "step-ca is one upstream authority"},
	{"github.com/jackc/pgx", []string{"internal/store/postgres"}, "PostgreSQL is one store"},
	{"modernc.org/sqlite", []string{"internal/store/sqlite"}, "SQLite is one store"},
	{"github.com/go-git/", []string{"authz/gitsync"}, "policy repositories are read in one place"},
}

// exempt reports whether a module package is a program rather than a library: commands, examples and
// benchmarks are clients and may use whatever they drive.
func exempt(r string, p pkg) bool {
	return p.Name == "main" || under(r, "bench", "examples", "test")
}

func TestPublicPackagesImportNoInternalPackage(t *testing.T) {
	for _, p := range list(t, "./...") {
		r, ok := rel(p.ImportPath)
		if !ok || isInternal(r) || exempt(r, p) {
			continue
		}
		for _, imp := range p.Imports {
			if ir, ok := rel(imp); ok && isInternal(ir) {
				t.Errorf("public package %s imports %s: public packages may import only public ones (move the code out of internal/, or the importer in)", r, ir)
			}
		}
	}
}

func TestDependenciesStayInTheirPackages(t *testing.T) {
	for _, p := range list(t, "./...") {
		r, ok := rel(p.ImportPath)
		if !ok || exempt(r, p) {
			continue
		}
		for _, imp := range p.Imports {
			for _, c := range confined {
				if strings.HasPrefix(imp, c.prefix) && !under(r, c.allowed...) {
					t.Errorf("%s imports %s, which only %s may import (%s)", r, imp, strings.Join(c.allowed, ", "), c.why)
				}
			}
		}
	}
}

func TestCAImportsOnlyStdlibSPIFFEAndSmallstepCrypto(t *testing.T) {
	allowed := []string{"github.com/spiffe/go-spiffe/v2/", "go.step.sm/crypto/"}
	for _, p := range list(t, "./ca") {
		for _, imp := range p.Imports {
			if r, ok := rel(imp); ok && under(r, "ca") {
				continue
			}
			std := !strings.Contains(strings.Split(imp, "/")[0], ".")
			if !std && !slices.ContainsFunc(allowed, func(a string) bool { return strings.HasPrefix(imp, a) }) {
				t.Errorf("ca imports %s: the ca package uses only the standard library, go-spiffe and smallstep's crypto", imp)
			}
		}
	}
}

func TestBinaryHasNoTestHelpers(t *testing.T) {
	for _, p := range list(t, "-deps", "./cmd/kith") {
		r, ok := rel(p.ImportPath)
		if ok && (strings.HasSuffix(p.Name, "test") || p.Name == "testutil") {
			t.Errorf("bin/kith links the test helper package %s", r)
		}
		if !ok || p.Standard {
			continue
		}
		if slices.Contains(p.Imports, "testing") {
			t.Errorf("bin/kith links %s, which imports testing", r)
		}
	}
}
