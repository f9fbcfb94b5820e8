package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/internal/store"
)

// authzSource is what the server's decision engine is built from.
type authzSource interface {
	ListGrants(ctx context.Context) ([]authz.Grant, error)
	TargetModes(ctx context.Context) (map[string]authz.Mode, error)
	ListEntries(ctx context.Context, f store.EntryFilter) ([]store.Entry, error)
	Revision(ctx context.Context) (int64, error)
}

// policyState is the active custom policy: its revision and the bundle agents receive.
type policyState struct {
	Revision string
	Bundle   []byte
	Modules  map[string]string
}

// authzView keeps a decision engine in step with the store, for `kith can`: it reloads grants, labels
// and modes whenever the store revision moved since the last decision.
type authzView struct {
	engine *authz.Engine
	src    authzSource
	mu     sync.Mutex
	loaded int64
	policy atomic.Pointer[policyState]

	signer    *ecdsa.PrivateKey // signs policy bundles; nil: unsigned
	publicKey []byte            // PEM of signer's public key
	gitLabels atomic.Pointer[map[string]map[string]string]
}

// setSigner makes setPolicy sign bundles with key.
func (v *authzView) setSigner(key *ecdsa.PrivateKey) error {
	pub, err := authz.MarshalPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	v.signer, v.publicKey = key, pub
	return nil
}

// PolicyKey is the PEM public key agents verify policy bundles with.
func (v *authzView) PolicyKey() []byte { return v.publicKey }

// setGitLabels sets the identity labels from the policy repository's data file; they are merged under the
// labels of registration entries.
func (v *authzView) setGitLabels(l map[string]map[string]string) {
	v.gitLabels.Store(&l)
	v.mu.Lock()
	v.loaded = -1
	v.mu.Unlock()
}

func newAuthzView(src authzSource, cfg authz.Config) (*authzView, error) {
	e, err := authz.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("authz engine: %w", err)
	}
	v := &authzView{engine: e, src: src, loaded: -1}
	v.policy.Store(&policyState{})
	return v, nil
}

// refresh reloads the engine's data if the store changed.
func (v *authzView) refresh(ctx context.Context) error {
	rev, err := v.src.Revision(ctx)
	if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if rev == v.loaded {
		return nil
	}
	d, err := v.Load(ctx)
	if err != nil {
		return err
	}
	if err := v.engine.SetData(ctx, d); err != nil {
		return fmt.Errorf("load authorization data: %w", err)
	}
	v.loaded = rev
	return nil
}

// Decide evaluates with current data.
func (v *authzView) Decide(ctx context.Context, in authz.Input) (authz.Decision, error) {
	if err := v.refresh(ctx); err != nil {
		return authz.Decision{}, err
	}
	return v.engine.Decide(ctx, in)
}

// setPolicy validates modules with the engine (compile + sample inputs) and, only if they pass, makes
// them the active policy that agents receive.
func (v *authzView) setPolicy(ctx context.Context, revision string, modules map[string]string) error {
	if err := v.engine.SetPolicy(ctx, revision, modules); err != nil {
		return err
	}
	var b []byte
	var err error
	if v.signer != nil {
		b, err = authz.BuildSignedBundle(revision, modules, v.signer)
	} else {
		b, err = authz.BuildBundle(revision, modules)
	}
	if err != nil {
		return err
	}
	v.policy.Store(&policyState{Revision: revision, Bundle: b, Modules: modules})
	return nil
}

// loadAuthzData reads grants, modes and identity labels from the store.
func loadAuthzData(ctx context.Context, src authzSource) (authz.Data, error) {
	grants, err := src.ListGrants(ctx)
	if err != nil {
		return authz.Data{}, err
	}
	modes, err := src.TargetModes(ctx)
	if err != nil {
		return authz.Data{}, err
	}
	entries, err := src.ListEntries(ctx, store.EntryFilter{})
	if err != nil {
		return authz.Data{}, err
	}
	return authz.Data{Grants: grants, Modes: modes, Labels: labelsOf(entries)}, nil
}

// labelsOf merges the labels of every entry per SPIFFE ID.
func labelsOf(entries []store.Entry) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, e := range entries {
		if len(e.Labels) == 0 {
			continue
		}
		id := e.SPIFFEID.String()
		if out[id] == nil {
			out[id] = map[string]string{}
		}
		maps.Copy(out[id], e.Labels)
	}
	return out
}

// readPolicyDir reads the Rego modules under dir: policies and, separately, *_test.rego tests.
func readPolicyDir(dir string) (modules, tests map[string]string, revision string, err error) {
	modules, tests = map[string]string{}, map[string]string{}
	h := sha256.New()
	var names []string
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && path != dir {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(d.Name(), ".rego") {
			return nil
		}
		names = append(names, path)
		return nil
	})
	if err != nil {
		return nil, nil, "", fmt.Errorf("read policy dir %s: %w", dir, err)
	}
	slices.Sort(names)
	for _, path := range names {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, "", fmt.Errorf("read %s: %w", path, err)
		}
		rel, _ := filepath.Rel(dir, path)
		h.Write([]byte(rel))
		h.Write(data)
		if strings.HasSuffix(rel, "_test.rego") {
			tests[rel] = string(data)
		} else {
			modules[rel] = string(data)
		}
	}
	return modules, tests, "dir:" + hex.EncodeToString(h.Sum(nil))[:12], nil
}

// Load reads the authorization data agents enforce with.
func (v *authzView) Load(ctx context.Context) (authz.Data, error) {
	d, err := loadAuthzData(ctx, v.src)
	if err != nil {
		return d, err
	}
	if gl := v.gitLabels.Load(); gl != nil {
		for id, labels := range *gl {
			if d.Labels[id] == nil {
				d.Labels[id] = map[string]string{}
			}
			for k, val := range labels {
				if _, ok := d.Labels[id][k]; !ok {
					d.Labels[id][k] = val
				}
			}
		}
	}
	return d, nil
}

// Policy returns the active custom policy revision and bundle.
func (v *authzView) Policy() (string, []byte) {
	p := v.policy.Load()
	return p.Revision, p.Bundle
}
