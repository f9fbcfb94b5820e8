package gitsync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/cover"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"gopkg.in/yaml.v3"

	"github.com/kithid/kith/authz"
)

// Policy is what a policy directory holds.
type Policy struct {
	Modules map[string]string // *.rego except tests, by path relative to the directory (slash-separated)
	Tests   map[string]string // *_test.rego
	Grants  []authz.Grant     // static grants from data.json or data.yaml (Source unset)
	Labels  map[string]map[string]string
	// Unread are data files below the top of the policy directory (slash-separated paths): the loader reads
	// data.json / data.yaml only at the top, so their grants and labels are not loaded. See Warnings.
	Unread []string
	// dataNotes are what the data file holds that can never take effect: unknown keys, expired grants.
	dataNotes []string
	// grantOrigins names where each of Grants is in the data file ("data.yaml: grants[3]").
	grantOrigins []string

	// Results are the outcomes of the Rego tests, in the order they ran (after Test or Check).
	Results []TestResult
	// Coverage is the test coverage of the modules, when CheckWith asked for it.
	Coverage *Coverage
	coverage bool
}

// TestResult is the outcome of one Rego test.
type TestResult struct {
	Name     string        // data.<package>.<test>
	Location string        // file:line
	Outcome  string        // PASS, FAIL, ERROR or SKIPPED
	Error    string        // for ERROR
	Duration time.Duration // how long it ran
}

// Coverage is how much of the policy modules the tests evaluate, by line.
type Coverage struct {
	Percent float64
	Files   []FileCoverage // by name
}

// FileCoverage is one module's coverage.
type FileCoverage struct {
	Name                string
	Percent             float64
	Covered, NotCovered int // lines
}

// Options are what CheckWith does beyond Check.
type Options struct {
	Coverage bool // measure test coverage (Policy.Coverage)
}

// Warnings says what in the directory is not loaded and why, with the path to use instead: data files
// below the top of the policy directory, whose grants and labels would otherwise be dropped silently.
func (p *Policy) Warnings() []string {
	var out []string
	for _, name := range p.Unread {
		dir := path.Dir(name)
		out = append(out, fmt.Sprintf("%s is not read: data files (%s) are read only at the top of the policy path, so its grants and labels are not loaded; "+
			"to load them use %s as the policy path (kith policy check %s, policy.git.path: %s, kith dev --policy-path %s)",
			name, strings.Join(dataFiles, ", "), dir, dir, dir, dir))
	}
	return append(out, p.dataNotes...)
}

// dataKeys and grantKeys are the keys a data file and each of its grants may have.
var (
	dataKeys  = []string{"grants", "labels"}
	grantKeys = []string{"caller", "target", "methods", "paths", "expires_at", "reason"}
)

// noteUnknownKeys records keys of the data file, and of its grants, that the loader ignores: a misspelt
// key ("grant", "method") would otherwise drop what it holds without a word.
func (p *Policy) noteUnknownKeys(name string, raw []byte) {
	var doc map[string]any
	var err error
	if strings.HasSuffix(name, ".json") {
		err = json.Unmarshal(raw, &doc)
	} else {
		err = yaml.Unmarshal(raw, &doc)
	}
	if err != nil {
		return // the typed decoding reports it
	}
	for _, k := range slices.Sorted(maps.Keys(doc)) {
		if !slices.Contains(dataKeys, k) {
			p.dataNotes = append(p.dataNotes, fmt.Sprintf("%s: unknown key %q is ignored (a data file has %s)", name, k, strings.Join(dataKeys, ", ")))
		}
	}
	grants, _ := doc["grants"].([]any)
	for i, g := range grants {
		obj, _ := g.(map[string]any)
		for _, k := range slices.Sorted(maps.Keys(obj)) {
			if !slices.Contains(grantKeys, k) {
				p.dataNotes = append(p.dataNotes, fmt.Sprintf("%s: grants[%d]: unknown key %q is ignored (a grant has %s)", name, i, k, strings.Join(grantKeys, ", ")))
			}
		}
	}
}

// dataFile is the shape of data.json / data.yaml: the same grant fields `kith grant` makes.
type dataFile struct {
	Grants []struct {
		Caller    string   `json:"caller" yaml:"caller"`
		Target    string   `json:"target" yaml:"target"`
		Methods   []string `json:"methods" yaml:"methods"`
		Paths     []string `json:"paths" yaml:"paths"`
		ExpiresAt string   `json:"expires_at" yaml:"expires_at"`
		Reason    string   `json:"reason" yaml:"reason"`
	} `json:"grants" yaml:"grants"`
	Labels map[string]map[string]string `json:"labels" yaml:"labels"`
}

// dataFiles are the names a data file may have, by preference.
var dataFiles = []string{"data.json", "data.yaml", "data.yml"}

// Read reads the policy files under dir within the default Limits, with the loader Git sync uses (see
// load). Hidden directories (such as .git) are skipped.
func Read(dir string) (*Policy, error) {
	return load(dirTree{root: dir}, Limits{}, "")
}

// isDataFile reports whether a file (slash-separated path relative to the policy directory) is a data
// file the loader reads.
func isDataFile(name string) bool { return slices.Contains(dataFiles, name) }

// isPolicyFile reports whether a file (slash-separated path relative to the policy directory) is read:
// a *.rego file outside hidden directories, or a data file at the top.
func isPolicyFile(name string) bool {
	if slices.Contains(dataFiles, name) {
		return true
	}
	if !strings.HasSuffix(name, ".rego") {
		return false
	}
	dirs := strings.Split(name, "/")
	for _, d := range dirs[:len(dirs)-1] {
		if strings.HasPrefix(d, ".") {
			return false
		}
	}
	return true
}

// isUnreadData reports whether a file (slash-separated path relative to the policy directory) is named like
// a data file but is below the top, outside hidden directories: the loader does not read it.
func isUnreadData(name string) bool {
	if !strings.Contains(name, "/") || !slices.Contains(dataFiles, path.Base(name)) {
		return false
	}
	for _, d := range strings.Split(path.Dir(name), "/") {
		if strings.HasPrefix(d, ".") {
			return false
		}
	}
	return true
}

// fromFiles makes a Policy of the files isPolicyFile picked, by slash-separated path, noting the data files
// isUnreadData found.
func fromFiles(files map[string][]byte, unread []string) (*Policy, error) {
	slices.Sort(unread)
	p := &Policy{Modules: map[string]string{}, Tests: map[string]string{}, Unread: unread}
	for name, data := range files {
		switch {
		case !strings.HasSuffix(name, ".rego"):
		case strings.HasSuffix(name, "_test.rego"):
			p.Tests[name] = string(data)
		default:
			p.Modules[name] = string(data)
		}
	}
	for _, name := range dataFiles {
		if raw, ok := files[name]; ok {
			if err := p.readData(name, raw); err != nil {
				return nil, err
			}
			break
		}
	}
	return p, nil
}

func (p *Policy) readData(name string, raw []byte) error {
	var df dataFile
	var err error
	if strings.HasSuffix(name, ".json") {
		err = json.Unmarshal(raw, &df)
	} else {
		err = yaml.Unmarshal(raw, &df)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	p.noteUnknownKeys(name, raw)
	var errs []error
	for i, dg := range df.Grants {
		g := authz.Grant{Caller: dg.Caller, Target: dg.Target, Methods: dg.Methods, Paths: dg.Paths, Reason: dg.Reason}
		for j, m := range g.Methods {
			g.Methods[j] = strings.ToUpper(m)
		}
		if dg.ExpiresAt != "" {
			t, err := time.Parse(time.RFC3339, dg.ExpiresAt)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: grants[%d].expires_at: want RFC 3339 (2026-01-02T15:04:05Z): %w", name, i, err))
				continue
			}
			g.ExpiresAt = t
			if !t.After(time.Now()) {
				p.dataNotes = append(p.dataNotes, fmt.Sprintf("%s: grants[%d] (%s → %s) expired at %s: it allows nothing", name, i, dg.Caller, dg.Target, dg.ExpiresAt))
			}
		}
		g.ID = grantID(g)
		if err := g.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: grants[%d]: %w", name, i, err))
			continue
		}
		p.Grants = append(p.Grants, g)
		p.grantOrigins = append(p.grantOrigins, fmt.Sprintf("%s: grants[%d]", name, i))
	}
	p.Labels = df.Labels
	return errors.Join(errs...)
}

// CheckTrustDomain refuses the data file's grants whose caller or target is outside trust domain td, as
// `kith grant` refuses them: such a grant could never match (agents see only identities of td), and a
// typo in the trust domain should not pass silently. Each error names the file and the grant.
func (p *Policy) CheckTrustDomain(td spiffeid.TrustDomain) error {
	var errs []error
	for i, g := range p.Grants {
		for _, end := range []struct{ role, pattern string }{{"caller", g.Caller}, {"target", g.Target}} {
			id, err := spiffeid.FromString(strings.TrimSuffix(end.pattern, "/*"))
			if end.pattern == "spiffe://"+td.Name()+"/*" {
				continue
			}
			if err != nil || id.TrustDomain() != td {
				errs = append(errs, fmt.Errorf("%s: %s %s is not in this server's trust domain %s: a grant can name only identities of %s", p.grantOrigins[i], end.role, end.pattern, td, td))
			}
		}
	}
	return errors.Join(errs...)
}

// grantID is stable for a grant's content, so that an unchanged grant keeps its ID across commits.
func grantID(g authz.Grant) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%s\x00%s", g.Caller, g.Target, strings.Join(g.Methods, ","),
		strings.Join(g.Paths, ","), g.ExpiresAt.UTC().Format(time.RFC3339), g.Reason)
	return "git-" + hex.EncodeToString(h.Sum(nil))[:12]
}

// Test compiles the modules with the built-in policy and runs the *_test.rego tests with OPA's test
// runner. A compile error names file:line; a failing test names file:line and the test.
func (p *Policy) Test(ctx context.Context) error { return p.test(ctx, nil) }

// test is Test with a cache of the modules parsed for an earlier commit (nil: none).
func (p *Policy) test(ctx context.Context, cache parseCache) error {
	all := maps.Clone(p.Modules)
	maps.Copy(all, p.Tests)
	parsed, err := cache.parse(all)
	if err != nil {
		return err
	}
	if len(p.Tests) == 0 {
		return nil
	}
	parsed[authz.BuiltinModule] = builtinParsed()
	runner := tester.NewRunner().SetDefaultRegoVersion(ast.RegoV1).SetTimeout(30 * time.Second).SetModules(parsed)
	var cov *cover.Cover
	if p.coverage {
		cov = cover.New()
		runner = runner.SetCoverageQueryTracer(cov)
	}
	ch, err := runner.RunTests(ctx, nil)
	if err != nil {
		return fmt.Errorf("compile: %w", err)
	}
	var failed []string
	n := 0
	p.Results = p.Results[:0]
	for r := range ch {
		n++
		res := TestResult{Name: r.Package + "." + r.Name, Location: loc(r.Location), Outcome: "PASS", Duration: r.Duration}
		switch {
		case r.Error != nil:
			res.Outcome, res.Error = "ERROR", r.Error.Error()
			failed = append(failed, fmt.Sprintf("%s: test %s.%s: error: %v", loc(r.Location), r.Package, r.Name, r.Error))
		case r.Fail:
			res.Outcome = "FAIL"
			failed = append(failed, fmt.Sprintf("%s: test %s.%s failed", loc(r.Location), r.Package, r.Name))
		case r.Skip:
			res.Outcome = "SKIPPED"
		}
		p.Results = append(p.Results, res)
	}
	if cov != nil {
		modules := map[string]*ast.Module{}
		for name := range p.Modules {
			modules[name] = parsed[name]
		}
		rep := cov.Report(modules)
		p.Coverage = &Coverage{}
		covered, total := 0, 0
		for _, name := range slices.Sorted(maps.Keys(rep.Files)) {
			f := rep.Files[name]
			if _, ok := p.Modules[name]; !ok {
				continue // the tests themselves, Kith's built-in module
			}
			p.Coverage.Files = append(p.Coverage.Files, FileCoverage{Name: name, Percent: f.Coverage, Covered: f.CoveredLines, NotCovered: f.NotCoveredLines})
			covered, total = covered+f.CoveredLines, total+f.CoveredLines+f.NotCoveredLines
		}
		if total > 0 {
			p.Coverage.Percent = 100 * float64(covered) / float64(total)
		}
	}
	if len(failed) > 0 {
		slices.Sort(failed)
		return fmt.Errorf("%d of %d policy tests failed:\n%s", len(failed), n, strings.Join(failed, "\n"))
	}
	return nil
}

// builtinParsed is the built-in policy parsed, once. OPA's compiler and test runner copy the modules they
// are given, so it is never changed.
var builtinParsed = sync.OnceValue(func() *ast.Module {
	return ast.MustParseModuleWithOpts(authz.BuiltinPolicy(), ast.ParserOptions{RegoVersion: ast.RegoV1})
})

// parseCache holds the modules parsed for the last commit, by file name, so that a commit parses only
// the files it changed. A nil cache parses everything and keeps nothing. The compiler copies the modules
// it is given, so a cached module is never changed.
type parseCache map[string]parsedModule

type parsedModule struct {
	src string
	mod *ast.Module
}

// parse parses files (name → source) as Rego v1 modules, those not in the cache in parallel. Parse errors
// of all files are returned together, in file order. On success the cache holds exactly these files.
func (c parseCache) parse(files map[string]string) (map[string]*ast.Module, error) {
	names := slices.Sorted(maps.Keys(files))
	if slices.Contains(names, authz.BuiltinModule) {
		return nil, fmt.Errorf("module name %s is reserved for the built-in policy", authz.BuiltinModule)
	}
	mods := make([]*ast.Module, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i, name := range names {
		if e, ok := c[name]; ok && e.src == files[name] {
			mods[i] = e.mod
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			mods[i], errs[i] = ast.ParseModuleWithOpts(name, files[name], ast.ParserOptions{RegoVersion: ast.RegoV1})
		})
	}
	wg.Wait()
	var astErrs ast.Errors
	out := make(map[string]*ast.Module, len(names))
	for i, name := range names {
		if err := errs[i]; err != nil {
			var e ast.Errors
			if !errors.As(err, &e) {
				return nil, fmt.Errorf("parse %s: %w", name, err)
			}
			astErrs = append(astErrs, e...)
			continue
		}
		out[name] = mods[i]
	}
	if len(astErrs) > 0 {
		return nil, fmt.Errorf("compile: %w", astErrs)
	}
	if c != nil {
		clear(c)
		for i, name := range names {
			c[name] = parsedModule{src: files[name], mod: mods[i]}
		}
	}
	return out, nil
}

func loc(l *ast.Location) string {
	if l == nil {
		return "?"
	}
	return fmt.Sprintf("%s:%d", l.File, l.Row)
}

// Check validates a policy directory the way the server validates a commit: read, compile, run the
// tests, then evaluate sample requests with a decision engine built from cfg (its Decision matters).
func Check(ctx context.Context, dir string, cfg authz.Config) (*Policy, error) {
	return CheckWith(ctx, dir, cfg, Options{})
}

// CheckWith is Check with options. When the tests fail it returns the policy (with its Results) and the
// error, so that a caller can show every outcome.
func CheckWith(ctx context.Context, dir string, cfg authz.Config, opts Options) (*Policy, error) {
	p, err := Read(dir)
	if err != nil {
		return nil, err
	}
	p.coverage = opts.Coverage
	if err := p.Test(ctx); err != nil {
		return p, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	e, err := authz.New(cfg)
	if err != nil {
		return nil, err
	}
	if err := e.SetPolicy(ctx, "check", p.Modules); err != nil {
		return nil, err
	}
	return p, nil
}

// ReadDataFile reads a data file (JSON, or YAML when its name does not end in .json) on its own: its grants,
// labels and warnings, as Read would take them from the top of a policy directory.
func ReadDataFile(path string) (*Policy, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p := &Policy{}
	if err := p.readData(filepath.Base(path), raw); err != nil {
		return nil, err
	}
	return p, nil
}
