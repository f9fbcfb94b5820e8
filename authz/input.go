package authz

import (
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/authz/grant"
)

var (
	emptyObject = ast.NewTerm(ast.NewObject())
	anyMethod   = ast.StringTerm("*")
)

// input builds the input document: OPA-Envoy's attributes, parsed_path and
// parsed_query, plus input.kith.
//
// Only the parts that the policy refers to are built: the built-in policy
// reads input.kith alone, so the Envoy attributes are converted only for
// custom policies that read them.
//
// cleaned is the request path as grants match it (grant.NormalizePath).
func (e *Engine) input(in Input, cleaned string, now time.Time, needs inputNeeds) (ast.Value, error) {
	method := strings.ToUpper(in.Method)
	rawPath, rawQuery, _ := strings.Cut(in.Path, "?")
	items := make([][2]*ast.Term, 0, 4)
	if needs.attributes {
		attrs, err := attributes(in, method, rawPath)
		if err != nil {
			return nil, err
		}
		items = append(items, ast.Item(keyAttributes, attrs))
	}
	if needs.parsedPath {
		parsedPath := in.ParsedPath
		if parsedPath == nil {
			parsedPath = splitPath(cleaned)
		}
		items = append(items, ast.Item(keyParsedPath, stringsTerm(parsedPath)))
	}
	if needs.parsedQuery {
		query := in.ParsedQuery
		if query == nil {
			if rawQuery == "" {
				rawQuery = in.Query
			}
			query = parseQuery(rawQuery, in.Attributes)
		}
		queryObj := ast.NewObject()
		for k, vs := range query {
			queryObj.Insert(ast.StringTerm(k), stringsTerm(vs))
		}
		items = append(items, ast.Item(keyParsedQuery, ast.NewTerm(queryObj)))
	}

	caller, target := e.identity(in.Caller), e.identity(in.Target)
	pathTerm := ast.StringTerm(cleaned)
	kith := ast.NewObject(
		ast.Item(keyCaller, caller.doc),
		ast.Item(keyTarget, target.doc),
		ast.Item(keyMethod, methodTerm(method)),
		ast.Item(keyPath, pathTerm),
		ast.Item(keyNow, ast.IntNumberTerm(int(now.UnixNano()))),
		ast.Item(keyCallerKeys, caller.keys),
		ast.Item(keyTargetKeys, target.keys),
		ast.Item(keyMethodKeys, methodKeys(method)),
		ast.Item(keyPathKeys, pathKeysTerm(pathTerm, cleaned, max(1, int(e.maxPathSlashes.Load())))),
	)
	if e.extN.Load() > 0 {
		kith.Insert(keyExtOK, e.extOK(in, method, cleaned))
	}
	items = append(items, ast.Item(keyKith, ast.NewTerm(kith)))
	return ast.NewObject(items...), nil
}

// Keys of the input document, made once: terms are not modified by
// evaluation, so every input shares them.
var (
	keyAttributes  = ast.StringTerm("attributes")
	keyParsedPath  = ast.StringTerm("parsed_path")
	keyParsedQuery = ast.StringTerm("parsed_query")
	keyKith        = ast.StringTerm("kith")
	keyCaller      = ast.StringTerm("caller")
	keyTarget      = ast.StringTerm("target")
	keyMethod      = ast.StringTerm("method")
	keyPath        = ast.StringTerm("path")
	keyNow         = ast.StringTerm("now")
	keyCallerKeys  = ast.StringTerm("caller_keys")
	keyTargetKeys  = ast.StringTerm("target_keys")
	keyMethodKeys  = ast.StringTerm("method_keys")
	keyPathKeys    = ast.StringTerm("path_keys")
	rootPathKey    = ast.StringTerm("/*")
	keyExtOK       = ast.StringTerm("ext_ok")
)

// extOK is input.kith.ext_ok: the IDs of the extended grants (grant.Grant.Extended) that the request's
// keys find and whose extended conditions it meets. Only those grants are looked at, by key, so the cost
// does not grow with the number of grants.
func (e *Engine) extOK(in Input, method, cleaned string) *ast.Term {
	ok := ast.NewObject()
	r := grant.Request{Caller: in.Caller.String(), Method: method, Path: cleaned, Headers: in.Headers, Port: in.Port}
	e.mu.RLock()
	defer e.mu.RUnlock()
	for _, tk := range e.keysOf(in.Target) {
		callers := e.ext[tk]
		if callers == nil {
			continue
		}
		for _, ck := range e.keysOf(in.Caller) {
			for id, c := range callers[ck] {
				if c.Check(r) == "" {
					ok.Insert(ast.StringTerm(id), ast.InternedTerm(true))
				}
			}
		}
	}
	return ast.NewTerm(ok)
}

// keysOf is grant.Keys of id and then "*" (grant.AnyCaller), which deny rules for any caller use.
func (e *Engine) keysOf(id spiffeid.ID) []string {
	if id.IsZero() {
		return nil
	}
	return append(grant.Keys(id, int(e.maxIDSlashes.Load())), grant.AnyCaller)
}

// inputNeeds says which top-level parts of the input a policy reads.
type inputNeeds struct{ attributes, parsedPath, parsedQuery bool }

var allInput = inputNeeds{attributes: true, parsedPath: true, parsedQuery: true}

// needsOf finds the parts of the input that modules refer to; a reference
// to the whole input, or to input[x], needs everything.
func needsOf(modules map[string]*ast.Module) inputNeeds {
	var n inputNeeds
	for _, m := range modules {
		ast.WalkTerms(m, func(t *ast.Term) bool { // true: skip the children
			switch v := t.Value.(type) {
			case ast.Var:
				if v.Equal(ast.InputRootDocument.Value) {
					n = allInput
				}
			case ast.Ref:
				if !v.HasPrefix(ast.InputRootRef) {
					return false
				}
				if len(v) < 2 {
					n = allInput
					return true
				}
				switch k := v[1].Value.(type) {
				case ast.String:
					switch k {
					case "attributes":
						n.attributes = true
					case "parsed_path":
						n.parsedPath = true
					case "parsed_query":
						n.parsedQuery = true
					}
				default:
					n = allInput
				}
				return true // not the head var
			}
			return false
		})
	}
	return n
}

// identityTerms are the parts of the input about one SPIFFE ID.
type identityTerms struct {
	doc  *ast.Term // {"id": ..., "labels": {...}}
	keys *ast.Term // grant.Keys
}

// idCache holds identityTerms by SPIFFE ID. It is replaced by an empty one
// when labels or key depth change, and when it grows past maxCachedIDs.
type idCache struct {
	m sync.Map
	n atomic.Int64
}

const maxCachedIDs = 1 << 16

var noIdentity = identityTerms{
	doc:  ast.ObjectTerm(ast.Item(ast.StringTerm("id"), ast.StringTerm("")), ast.Item(ast.StringTerm("labels"), emptyObject)),
	keys: ast.ArrayTerm(),
}

func (e *Engine) identity(id spiffeid.ID) identityTerms {
	if id.IsZero() {
		return noIdentity
	}
	s := id.String()
	c := e.ids.Load()
	if v, ok := c.m.Load(s); ok {
		return v.(identityTerms)
	}
	e.mu.RLock()
	labels := e.labelsOf(id)
	e.mu.RUnlock()
	t := identityTerms{
		doc:  ast.ObjectTerm(ast.Item(ast.StringTerm("id"), ast.StringTerm(s)), ast.Item(ast.StringTerm("labels"), labels)),
		keys: stringsTerm(e.keysOf(id)),
	}
	if c.n.Add(1) > maxCachedIDs {
		e.ids.CompareAndSwap(c, &idCache{})
	} else {
		c.m.Store(s, t)
	}
	return t
}

// methodTerms and methodKeyTerms hold, for each HTTP method, its term and
// its method_keys term.
var methodTerms, methodKeyTerms = func() (map[string]*ast.Term, map[string]*ast.Term) {
	terms, keys := map[string]*ast.Term{}, map[string]*ast.Term{}
	for _, method := range grant.HTTPMethods() {
		terms[method] = ast.StringTerm(method)
		keys[method] = ast.ArrayTerm(terms[method], anyMethod)
	}
	return terms, keys
}()

func methodTerm(method string) *ast.Term {
	if t, ok := methodTerms[method]; ok {
		return t
	}
	return ast.StringTerm(method)
}

func methodKeys(method string) *ast.Term {
	if t, ok := methodKeyTerms[method]; ok {
		return t
	}
	return ast.ArrayTerm(ast.StringTerm(method), anyMethod)
}

// pathKeysTerm returns the keys of a grant's paths object that can match
// the (cleaned) request path p, whose term is pathTerm: the path itself,
// then "/*", "/a/*", "/a/b/*" and so on for each ancestor, at most
// maxSlashes of them.
func pathKeysTerm(pathTerm *ast.Term, p string, maxSlashes int) *ast.Term {
	terms := make([]*ast.Term, 0, 1+min(maxSlashes, strings.Count(p, "/")))
	terms = append(terms, pathTerm)
	for i, n := 0, 0; i < len(p) && n < maxSlashes; i++ {
		if p[i] == '/' {
			if i == 0 {
				terms = append(terms, rootPathKey)
			} else {
				terms = append(terms, ast.StringTerm(p[:i+1]+"*"))
			}
			n++
		}
	}
	return ast.ArrayTerm(terms...)
}

func (e *Engine) labelsOf(id spiffeid.ID) *ast.Term {
	if id.IsZero() {
		return emptyObject
	}
	if t, ok := e.labels[id.String()]; ok {
		return t
	}
	return emptyObject
}

func idTerm(id spiffeid.ID) *ast.Term {
	if id.IsZero() {
		return ast.StringTerm("")
	}
	return ast.StringTerm(id.String())
}

func stringsTerm(keys []string) *ast.Term {
	terms := make([]*ast.Term, len(keys))
	for i, k := range keys {
		terms[i] = ast.StringTerm(k)
	}
	return ast.ArrayTerm(terms...)
}

// attributes returns in.Attributes as a term, or when nil a minimal
// OPA-Envoy attributes document made from the other fields, so that ported
// rules reading input.attributes.request.http work for `kith can`.
func attributes(in Input, method, rawPath string) (*ast.Term, error) {
	if in.Attributes != nil {
		v, err := ast.InterfaceToValue(in.Attributes)
		if err != nil {
			return nil, fmt.Errorf("convert attributes: %w", err)
		}
		return ast.NewTerm(v), nil
	}
	p := in.Path
	if p == "" {
		p = rawPath
	}
	return ast.ObjectTerm(
		ast.Item(ast.StringTerm("source"), ast.ObjectTerm(ast.Item(ast.StringTerm("principal"), idTerm(in.Caller)))),
		ast.Item(ast.StringTerm("destination"), ast.ObjectTerm(ast.Item(ast.StringTerm("principal"), idTerm(in.Target)))),
		ast.Item(ast.StringTerm("request"), ast.ObjectTerm(ast.Item(ast.StringTerm("http"), ast.ObjectTerm(
			ast.Item(ast.StringTerm("method"), ast.StringTerm(method)),
			ast.Item(ast.StringTerm("path"), ast.StringTerm(p)),
			ast.Item(ast.StringTerm("headers"), ast.ObjectTerm()),
		)))),
	), nil
}

// splitPath computes OPA-Envoy's parsed_path: the URL-decoded path split on
// "/" after the leading slashes ("/api/v1" -> ["api", "v1"], "/" -> [""]).
func splitPath(p string) []string {
	if u, err := url.Parse(p); err == nil {
		p = u.Path
	}
	return strings.Split(strings.TrimLeft(p, "/"), "/")
}

// parseQuery computes OPA-Envoy's parsed_query from the query of in.Path or,
// failing that, of attributes.request.http.path.
func parseQuery(raw string, attrs map[string]any) map[string][]string {
	if raw == "" && attrs != nil {
		if req, ok := attrs["request"].(map[string]any); ok {
			if h, ok := req["http"].(map[string]any); ok {
				if p, ok := h["path"].(string); ok {
					_, raw, _ = strings.Cut(p, "?")
				}
			}
		}
	}
	if raw == "" {
		return nil
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return nil
	}
	return q
}

// cleanPath is the path grants are matched against (grant.NormalizePath),
// and ok false for a path that is refused.
func cleanPath(p string) (string, bool) {
	n, err := grant.NormalizePath(p)
	return n, err == nil
}
