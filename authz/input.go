package authz

import (
	"fmt"
	"net/url"
	"path"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var emptyObject = ast.NewTerm(ast.NewObject())

// input builds the input document: OPA-Envoy's attributes, parsed_path and
// parsed_query, plus input.kith.
func (e *Engine) input(in Input) (ast.Value, error) {
	method := strings.ToUpper(in.Method)
	rawPath, rawQuery, _ := strings.Cut(in.Path, "?")
	attrs, err := attributes(in, method, rawPath)
	if err != nil {
		return nil, err
	}
	parsedPath := in.ParsedPath
	if parsedPath == nil {
		parsedPath = splitPath(rawPath)
	}
	pathTerms := make([]*ast.Term, len(parsedPath))
	for i, s := range parsedPath {
		pathTerms[i] = ast.StringTerm(s)
	}
	query := in.ParsedQuery
	if query == nil {
		query = parseQuery(rawQuery, in.Attributes)
	}
	queryObj := ast.NewObject()
	for k, vs := range query {
		arr := make([]*ast.Term, len(vs))
		for i, v := range vs {
			arr[i] = ast.StringTerm(v)
		}
		queryObj.Insert(ast.StringTerm(k), ast.ArrayTerm(arr...))
	}

	e.mu.RLock()
	callerLabels, targetLabels := e.labelsOf(in.Caller), e.labelsOf(in.Target)
	e.mu.RUnlock()

	kith := ast.NewObject(
		ast.Item(ast.StringTerm("caller"), ast.ObjectTerm(
			ast.Item(ast.StringTerm("id"), idTerm(in.Caller)),
			ast.Item(ast.StringTerm("labels"), callerLabels),
		)),
		ast.Item(ast.StringTerm("target"), ast.ObjectTerm(
			ast.Item(ast.StringTerm("id"), idTerm(in.Target)),
			ast.Item(ast.StringTerm("labels"), targetLabels),
		)),
		ast.Item(ast.StringTerm("method"), ast.StringTerm(method)),
		ast.Item(ast.StringTerm("path"), ast.StringTerm(cleanPath(rawPath))),
		ast.Item(ast.StringTerm("now"), ast.IntNumberTerm(int(e.now().UnixNano()))),
		ast.Item(ast.StringTerm("caller_keys"), keysTerm(in.Caller)),
		ast.Item(ast.StringTerm("target_keys"), keysTerm(in.Target)),
	)
	return ast.NewObject(
		ast.Item(ast.StringTerm("attributes"), attrs),
		ast.Item(ast.StringTerm("parsed_path"), ast.ArrayTerm(pathTerms...)),
		ast.Item(ast.StringTerm("parsed_query"), ast.NewTerm(queryObj)),
		ast.Item(ast.StringTerm("kith"), ast.NewTerm(kith)),
	), nil
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

func keysTerm(id spiffeid.ID) *ast.Term {
	keys := matchKeys(id)
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

// cleanPath is the path grants are matched against: lexically cleaned
// ("/api/../admin" is "/admin"), keeping a trailing slash, so that dot
// segments cannot escape a path grant. Configure Envoy with normalize_path
// and merge_slashes so that the upstream sees the same path.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	c := path.Clean("/" + p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}
