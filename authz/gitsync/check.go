package gitsync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"
	"gopkg.in/yaml.v3"

	"github.com/kithid/kith/authz"
)

// Policy is what a policy directory holds.
type Policy struct {
	Modules map[string]string // *.rego except tests, by path relative to the directory (slash-separated)
	Tests   map[string]string // *_test.rego
	Grants  []authz.Grant     // static grants from data.json or data.yaml (Source unset)
	Labels  map[string]map[string]string
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

// Read reads the policy files under dir. Hidden directories (such as .git) are skipped.
func Read(dir string) (*Policy, error) {
	p := &Policy{Modules: map[string]string{}, Tests: map[string]string{}}
	var names []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && path != dir {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), ".rego") {
			names = append(names, path)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read policy dir %s: %w", dir, err)
	}
	slices.Sort(names)
	for _, path := range names {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		rel, _ := filepath.Rel(dir, path)
		rel = filepath.ToSlash(rel)
		if strings.HasSuffix(rel, "_test.rego") {
			p.Tests[rel] = string(data)
		} else {
			p.Modules[rel] = string(data)
		}
	}
	for _, name := range []string{"data.json", "data.yaml", "data.yml"} {
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		if err := p.readData(name, raw); err != nil {
			return nil, err
		}
		break
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
		}
		g.ID = grantID(g)
		if err := g.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: grants[%d]: %w", name, i, err))
			continue
		}
		p.Grants = append(p.Grants, g)
	}
	p.Labels = df.Labels
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
func (p *Policy) Test(ctx context.Context) error {
	parsed := map[string]*ast.Module{}
	var errs ast.Errors
	all := maps.Clone(p.Modules)
	maps.Copy(all, p.Tests)
	for _, name := range slices.Sorted(maps.Keys(all)) {
		if name == authz.BuiltinModule {
			return fmt.Errorf("module name %s is reserved for the built-in policy", name)
		}
		m, err := ast.ParseModuleWithOpts(name, all[name], ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			var astErrs ast.Errors
			if errors.As(err, &astErrs) {
				errs = append(errs, astErrs...)
				continue
			}
			return fmt.Errorf("parse %s: %w", name, err)
		}
		parsed[name] = m
	}
	if len(errs) > 0 {
		return fmt.Errorf("compile: %w", errs)
	}
	if len(p.Tests) == 0 {
		return nil
	}
	parsed[authz.BuiltinModule] = ast.MustParseModuleWithOpts(authz.BuiltinPolicy(), ast.ParserOptions{RegoVersion: ast.RegoV1})
	ch, err := tester.NewRunner().SetDefaultRegoVersion(ast.RegoV1).SetTimeout(30*time.Second).SetModules(parsed).RunTests(ctx, nil)
	if err != nil {
		return fmt.Errorf("compile: %w", err)
	}
	var failed []string
	n := 0
	for r := range ch {
		n++
		switch {
		case r.Error != nil:
			failed = append(failed, fmt.Sprintf("%s: test %s.%s: error: %v", loc(r.Location), r.Package, r.Name, r.Error))
		case r.Fail:
			failed = append(failed, fmt.Sprintf("%s: test %s.%s failed", loc(r.Location), r.Package, r.Name))
		}
	}
	if len(failed) > 0 {
		slices.Sort(failed)
		return fmt.Errorf("%d of %d policy tests failed:\n%s", len(failed), n, strings.Join(failed, "\n"))
	}
	return nil
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
	p, err := Read(dir)
	if err != nil {
		return nil, err
	}
	if err := p.Test(ctx); err != nil {
		return nil, err
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
