package authz

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/authz/grant"
)

// Data is everything the built-in policy decides with besides the request.
type Data struct {
	Grants []Grant
	Labels map[string]map[string]string // SPIFFE ID -> labels (from registration entries, e.g. env=dev)
	Modes  map[string]Mode              // target SPIFFE ID -> mode; absent means enforce
}

var grantsPath = storage.MustParsePath("/kith/grants")

// DisabledLabel, set to "true" among an identity's labels, marks a disabled user: every request it makes
// is denied before any policy, whatever the target's mode.
const DisabledLabel = "kith.io/disabled"

func disabledOf(labels map[string]map[string]string) *map[string]bool {
	m := map[string]bool{}
	for id, l := range labels {
		if l[DisabledLabel] == "true" {
			m[id] = true
		}
	}
	return &m
}

// storePath is the path of data.kith.grants[segs[0]][segs[1]]...
func storePath(segs ...string) storage.Path {
	return append(slices.Clip(grantsPath), segs...)
}

// SetData replaces all grants, labels and modes. It validates everything
// first and changes nothing on error.
func (e *Engine) SetData(ctx context.Context, d Data) error {
	grants := make(map[string]*storedGrant, len(d.Grants))
	values := map[string]ast.Value{}
	ext := extIndex{}
	var extN int64
	var idSlashes, pathSlashes int32
	tree := map[string]any{}
	for _, g := range d.Grants {
		if err := g.Validate(); err != nil {
			return err
		}
		if _, dup := grants[g.ID]; dup {
			return fmt.Errorf("grant %s appears twice", g.ID)
		}
		sg, err := newStoredGrant(g)
		if err != nil {
			return err
		}
		grants[g.ID] = sg
		if sg.compiled != nil {
			ext.put(sg.compiled)
			extN++
		}
		callers, ok := tree[g.Target].(map[string]any)
		if !ok {
			callers = map[string]any{}
			tree[g.Target] = callers
		}
		ids, ok := callers[g.Caller].(map[string]any)
		if !ok {
			ids = map[string]any{}
			callers[g.Caller] = ids
		}
		ids[g.ID] = storeValue(g, values)
		i, p := slashes(g)
		idSlashes, pathSlashes = max(idSlashes, i), max(pathSlashes, p)
	}
	labels := make(map[string]*ast.Term, len(d.Labels))
	for id, l := range d.Labels {
		if _, err := spiffeid.FromString(id); err != nil {
			return fmt.Errorf("labels for %q: %w", id, err)
		}
		labels[id] = labelsTerm(l)
	}
	modes := make(map[string]Mode, len(d.Modes))
	for id, m := range d.Modes {
		if _, err := spiffeid.FromString(id); err != nil {
			return fmt.Errorf("mode for %q: %w", id, err)
		}
		if err := m.Validate(); err != nil {
			return fmt.Errorf("mode for %s: %w", id, err)
		}
		modes[id] = m
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	err := storage.Txn(ctx, e.store, storage.WriteParams, func(txn storage.Transaction) error {
		return e.store.Write(ctx, txn, storage.ReplaceOp, grantsPath, tree)
	})
	if err != nil {
		return fmt.Errorf("write grants: %w", err)
	}
	e.grants, e.values, e.labels, e.modes, e.ext = grants, values, labels, modes, ext
	e.extN.Store(extN)
	e.disabled.Store(disabledOf(d.Labels))
	e.maxIDSlashes.Store(idSlashes)
	e.maxPathSlashes.Store(pathSlashes)
	e.ids.Store(&idCache{}) // after the labels and key depth it caches
	return nil
}

// PutGrant adds g or replaces the grant with its ID. It takes effect on the
// next decision; the policy is not recompiled.
func (e *Engine) PutGrant(ctx context.Context, g Grant) error {
	sg, err := newStoredGrant(g)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var old *Grant
	if o, ok := e.grants[g.ID]; ok {
		old = &o.Grant
	}
	if err := e.writeGrant(ctx, old, &g); err != nil {
		return fmt.Errorf("put grant %s: %w", g.ID, err)
	}
	if old != nil && old.Extended() {
		e.ext.remove(*old)
		e.extN.Add(-1)
	}
	e.grants[g.ID] = sg
	if sg.compiled != nil {
		e.ext.put(sg.compiled)
		e.extN.Add(1)
	}
	i, p := slashes(g)
	if p > e.maxPathSlashes.Load() {
		e.maxPathSlashes.Store(p)
	}
	if i > e.maxIDSlashes.Load() {
		e.maxIDSlashes.Store(i)
		e.ids.Store(&idCache{}) // after the key depth it caches
	}
	return nil
}

// DeleteGrant removes the grant with the given ID; removing an unknown grant
// is not an error.
func (e *Engine) DeleteGrant(ctx context.Context, id string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	g, ok := e.grants[id]
	if !ok {
		return nil
	}
	if err := e.writeGrant(ctx, &g.Grant, nil); err != nil {
		return fmt.Errorf("delete grant %s: %w", id, err)
	}
	delete(e.grants, id)
	if g.compiled != nil {
		e.ext.remove(g.Grant)
		e.extN.Add(-1)
	}
	return nil
}

// newStoredGrant validates g and compiles its expressions when it is extended.
func newStoredGrant(g Grant) (*storedGrant, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	sg := &storedGrant{Grant: g}
	if g.Extended() {
		c, err := grant.Compile(g)
		if err != nil {
			return nil, err
		}
		sg.compiled = c
	}
	return sg, nil
}

// writeGrant replaces old (if any) by g (if any) in one store transaction,
// removing the caller and target entries old leaves empty. All reads come
// before the first write: the in-memory store copies what a transaction
// reads after writing, which must not happen while decisions read it.
// The caller holds e.mu.
func (e *Engine) writeGrant(ctx context.Context, old, g *Grant) error {
	return storage.Txn(ctx, e.store, storage.WriteParams, func(txn storage.Transaction) error {
		lenAt := func(p storage.Path) int {
			v, err := e.store.Read(ctx, txn, p)
			if err != nil {
				return 0
			}
			return size(v)
		}
		var oldPairLen, oldTargetLen int
		if old != nil {
			oldPairLen, oldTargetLen = lenAt(storePath(old.Target, old.Caller)), lenAt(storePath(old.Target))
		}
		var targetExists, pairExists bool
		if g != nil {
			targetExists, pairExists = lenAt(storePath(g.Target)) > 0, lenAt(storePath(g.Target, g.Caller)) > 0
		}
		write := func(op storage.PatchOp, p storage.Path, v any) error { return e.store.Write(ctx, txn, op, p, v) }

		if old != nil && g != nil && old.Target == g.Target && old.Caller == g.Caller {
			return write(storage.AddOp, storePath(g.Target, g.Caller, g.ID), storeValue(*g, e.values))
		}
		if old != nil {
			var err error
			switch {
			case oldPairLen > 1:
				err = write(storage.RemoveOp, storePath(old.Target, old.Caller, old.ID), nil)
			case oldTargetLen > 1:
				err = write(storage.RemoveOp, storePath(old.Target, old.Caller), nil)
			default:
				err = write(storage.RemoveOp, storePath(old.Target), nil)
				if g != nil && g.Target == old.Target {
					targetExists, pairExists = false, false
				}
			}
			if err != nil {
				return err
			}
		}
		if g == nil {
			return nil
		}
		v := storeValue(*g, e.values)
		switch {
		case !targetExists:
			return write(storage.AddOp, storePath(g.Target), map[string]any{g.Caller: map[string]any{g.ID: v}})
		case !pairExists:
			return write(storage.AddOp, storePath(g.Target, g.Caller), map[string]any{g.ID: v})
		default:
			return write(storage.AddOp, storePath(g.Target, g.Caller, g.ID), v)
		}
	})
}

func size(v any) int {
	switch v := v.(type) {
	case ast.Object:
		return v.Len()
	case map[string]any:
		return len(v)
	}
	return 0
}

// Grants returns the grants, ordered by ID.
func (e *Engine) Grants() []Grant {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make([]Grant, 0, len(e.grants))
	for _, id := range slices.Sorted(maps.Keys(e.grants)) {
		out = append(out, e.grants[id].Grant)
	}
	return out
}

// SetLabels replaces the labels of id; nil or empty labels remove them.
func (e *Engine) SetLabels(ctx context.Context, id spiffeid.ID, labels map[string]string) error {
	if id.IsZero() {
		return errors.New("set labels: empty SPIFFE ID")
	}
	t := labelsTerm(labels)
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(labels) == 0 {
		delete(e.labels, id.String())
	} else {
		e.labels[id.String()] = t
	}
	disabled := maps.Clone(*e.disabled.Load())
	delete(disabled, id.String())
	if labels[DisabledLabel] == "true" {
		disabled[id.String()] = true
	}
	e.disabled.Store(&disabled)
	e.ids.Store(&idCache{}) // after the labels it caches
	return nil
}

// SetMode sets the mode of a target; ModeEnforce is the same as no mode.
func (e *Engine) SetMode(ctx context.Context, target spiffeid.ID, m Mode) error {
	if target.IsZero() {
		return errors.New("set mode: empty target SPIFFE ID")
	}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("set mode for %s: %w", target, err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if m == ModeEnforce {
		delete(e.modes, target.String())
	} else {
		e.modes[target.String()] = m
	}
	return nil
}

func labelsTerm(labels map[string]string) *ast.Term {
	obj := ast.NewObject()
	for k, v := range labels {
		obj.Insert(ast.StringTerm(k), ast.StringTerm(v))
	}
	return ast.NewTerm(obj)
}

// slashes returns how many prefix keys of a request's IDs and path are
// needed to find g (see grant.Keys and pathKeysTerm).
func slashes(g Grant) (id, path int32) {
	for _, s := range []string{g.Caller, g.Target} {
		if strings.HasSuffix(s, "/*") {
			id = max(id, int32(strings.Count(strings.TrimPrefix(s, "spiffe://"), "/")))
		}
	}
	for _, p := range g.Paths {
		if body, ok := strings.CutSuffix(p, "/*"); ok && !strings.Contains(body, "*") {
			path = max(path, int32(depth(p)))
		}
	}
	return id, path
}
