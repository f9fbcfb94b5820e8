package grant

import (
	"slices"
	"strings"
	"testing"
)

func TestGrantValidate(t *testing.T) {
	valid := Grant{ID: "g", Caller: "spiffe://example.org/ns/prod/sa/frontend", Target: "spiffe://example.org/ns/prod/*", Methods: []string{"GET", "POST"}, Paths: []string{"/api/*", "/pkg.S/*", "/a/*/b"}}
	tests := []struct {
		name    string
		change  func(*Grant)
		wantErr string
	}{
		{"a grant with IDs, prefixes, methods and paths is valid", func(*Grant) {}, ""},
		{"a whole trust domain prefix is valid", func(g *Grant) { g.Caller = "spiffe://example.org/*" }, ""},
		{"an empty ID is refused", func(g *Grant) { g.ID = "" }, "id is empty"},
		{"a caller that is not a SPIFFE ID is refused", func(g *Grant) { g.Caller = "frontend" }, `caller: "frontend" is not a SPIFFE ID`},
		{"a wildcard inside an ID is refused", func(g *Grant) { g.Target = "spiffe://example.org/ns/*/sa/x" }, "only allowed as a trailing /*"},
		{"a lower-case method is refused with a hint", func(g *Grant) { g.Methods = []string{"get"} }, `method "get" must be upper-case (GET)`},
		{"an unknown method is refused", func(g *Grant) { g.Methods = []string{"FETCH"} }, `method "FETCH" is not an HTTP method`},
		{"a relative path is refused", func(g *Grant) { g.Paths = []string{"api"} }, `path "api" must start with /`},
		{"a path with brackets is refused", func(g *Grant) { g.Paths = []string{"/a[1]"} }, "only * is special"},
		{"a path with ** is refused", func(g *Grant) { g.Paths = []string{"/a/**"} }, "not **"},
		{"a path with a .. segment can never match", func(g *Grant) { g.Paths = []string{"/api/../admin"} }, `path "/api/../admin" can never match`},
		{"a path with a . segment can never match", func(g *Grant) { g.Paths = []string{"/api/./x"} }, "after . and .. segments are resolved"},
		{"a path ending in .. can never match", func(g *Grant) { g.Paths = []string{"/api/.."} }, "can never match"},
		{"a path with // can never match", func(g *Grant) { g.Paths = []string{"/api//x"} }, "repeated slashes merged"},
		{"a path with an encoded dot can never match", func(g *Grant) { g.Paths = []string{"/api/%2e%2e/admin"} }, `write "/admin"`},
		{"a path with an encoded slash can never match", func(g *Grant) { g.Paths = []string{"/api%2Fadmin/*"} }, "encoded slash"},
		{"a path with a lower-case encoding can never match", func(g *Grant) { g.Paths = []string{"/a%c3%a9"} }, `write "/a%C3%A9"`},
		{"dots inside a segment are fine", func(g *Grant) { g.Paths = []string{"/v1.2/...x/a.b"} }, ""},
		{"a 3 MB reason is refused", func(g *Grant) { g.Reason = strings.Repeat("x", 3<<20) }, "reason of 3145728 bytes, at most 1024"},
		{"a 1025-byte path is refused", func(g *Grant) { g.Paths = []string{"/" + strings.Repeat("a", 1024)} }, "a path of 1025 bytes, at most 1024"},
		{"65 paths are refused", func(g *Grant) { g.Paths = slices.Repeat([]string{"/a"}, 65) }, "65 paths, path expressions and excepted paths, at most 64"},
		{"a path expression is valid", func(g *Grant) { g.PathRegex = []string{"/api/v[0-9]+/.*"} }, ""},
		{"a path expression that is not RE2 is refused", func(g *Grant) { g.PathRegex = []string{"/a(?=b)"} }, `"/a(?=b)" is not an RE2 expression`},
		{"an unbalanced path expression cannot escape the anchor", func(g *Grant) { g.PathRegex = []string{"x)|(.*"} }, "is not an RE2 expression"},
		{"a header match is valid", func(g *Grant) { g.Headers = map[string]string{"user-agent": ".*Android.*"} }, ""},
		{"an upper-case header name is refused", func(g *Grant) { g.Headers = map[string]string{"User-Agent": "x"} }, `header name "User-Agent": want a lower-case`},
		{"a header expression that is not RE2 is refused", func(g *Grant) { g.Headers = map[string]string{"cookie": "(x"} }, "header cookie:"},
		{"port 0 is refused", func(g *Grant) { g.Ports = []uint32{0} }, "port 0: want 1 to 65535"},
		{"an excepted lower-case method is refused", func(g *Grant) { g.NotMethods = []string{"delete"} }, `method "delete" must be upper-case`},
		{"an excepted path is checked like a path", func(g *Grant) { g.NotPaths = []string{"admin"} }, `path "admin" must start with /`},
		{"an excepted caller must be a pattern", func(g *Grant) { g.NotCallers = []string{"x"} }, `not caller: "x" is not a SPIFFE ID`},
		{"any caller is refused for a grant", func(g *Grant) { g.Caller = "*" }, "only for deny rules"},
		{"any caller is valid for a deny rule", func(g *Grant) { g.Caller, g.Deny = "*", true }, ""},
		{"a caller over 2,048 bytes is refused", func(g *Grant) { g.Caller = "spiffe://example.org/" + strings.Repeat("a", 2048) }, "at most 2048"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := valid
			tt.change(&g)
			err := g.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Validate = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestCompiledCheck(t *testing.T) {
	c, err := Compile(Grant{ID: "g", Caller: "spiffe://example.org/ns/a/*", Target: "spiffe://example.org/ns/b/sa/c",
		Paths: []string{"/exact"}, PathRegex: []string{"/api/v[0-9]+"}, Headers: map[string]string{"user-agent": ".*iPhone.*"},
		Ports: []uint32{8080}, NotMethods: []string{"DELETE"}, NotPaths: []string{"/api/v1/admin/*"}, NotCallers: []string{"spiffe://example.org/ns/a/sa/x"}})
	if err != nil {
		t.Fatal(err)
	}
	ok := Request{Caller: "spiffe://example.org/ns/a/sa/y", Method: "GET", Path: "/api/v2/users", Headers: map[string]string{"user-agent": "Mozilla (iPhone)"}, Port: 8080}
	tests := []struct {
		name   string
		change func(*Request)
		want   string
	}{
		{"a request meeting every condition passes", func(*Request) {}, ""},
		{"a path pattern passes beside the expressions", func(r *Request) { r.Path = "/exact" }, ""},
		{"a path matching neither fails on the path", func(r *Request) { r.Path = "/x/api/v2" }, "path"},
		{"a missing header fails", func(r *Request) { r.Headers = nil }, "header user-agent"},
		{"another port fails", func(r *Request) { r.Port = 9090 }, "port"},
		{"an excepted method fails", func(r *Request) { r.Method = "DELETE" }, "excepted method"},
		{"an excepted path fails", func(r *Request) { r.Path = "/api/v1/admin/x" }, "excepted path"},
		{"an excepted caller fails", func(r *Request) { r.Caller = "spiffe://example.org/ns/a/sa/x" }, "excepted caller"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ok
			tt.change(&r)
			if got := c.Check(r); got != tt.want {
				t.Errorf("Check = %q, want %q", got, tt.want)
			}
		})
	}
}
