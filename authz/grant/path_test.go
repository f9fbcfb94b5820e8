package grant

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestNormalizePath(t *testing.T) {
	tests := []struct {
		name, path, want string
		wantErr          error
	}{
		{name: "a clean path is kept", path: "/api/v1/users", want: "/api/v1/users"},
		{name: "a trailing slash is kept", path: "/api/", want: "/api/"},
		{name: "empty is the root", path: "", want: "/"},
		{name: "a missing leading slash is added", path: "api/x", want: "/api/x"},
		{name: "slashes are merged", path: "//api//x", want: "/api/x"},
		{name: "dot dot goes up", path: "/api/../admin", want: "/admin"},
		{name: "dot is dropped", path: "/api/./x/", want: "/api/x/"},
		{name: "dot dot above the root stays at the root", path: "/../../etc/passwd", want: "/etc/passwd"},
		{name: "a final dot leaves a trailing slash", path: "/a/.", want: "/a/"},
		{name: "a final dot dot leaves a trailing slash", path: "/a/b/..", want: "/a/"},
		{name: "dots inside a segment are kept", path: "/a/..b/.c", want: "/a/..b/.c"},
		{name: "encoded dots are decoded before dot segments are removed", path: "/api/%2e%2e/admin", want: "/admin"},
		{name: "mixed encoded dots too", path: "/api/.%2E/admin", want: "/admin"},
		{name: "an encoded single dot", path: "/api/%2e/admin", want: "/api/admin"},
		{name: "encoded unreserved characters are decoded", path: "/%61%70%69/%7Euser_%2D", want: "/api/~user_-"},
		{name: "other encodings are kept, upper-cased", path: "/a%20b/%c3%a9", want: "/a%20b/%C3%A9"},
		{name: "an encoded percent is not decoded twice", path: "/a/%252e%252e/b", want: "/a/%252e%252e/b"},
		{name: "a gRPC method", path: "/pkg.Service/Method", want: "/pkg.Service/Method"},
		{name: "an encoded slash is refused", path: "/api/..%2fadmin", wantErr: ErrEncodedSlash},
		{name: "an encoded upper-case slash is refused", path: "/api/%2F", wantErr: ErrEncodedSlash},
		{name: "an encoded backslash is refused", path: "/api/..%5cadmin", wantErr: ErrEncodedSlash},
		{name: "a backslash is refused", path: `/api/..\admin`, wantErr: ErrBadPath},
		{name: "a truncated encoding is refused", path: "/api/%2", wantErr: ErrBadPath},
		{name: "a non-hex encoding is refused", path: "/api/%zz", wantErr: ErrBadPath},
		{name: "a control character is refused", path: "/api/\x00/x", wantErr: ErrBadPath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NormalizePath(tt.path)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("NormalizePath(%q) error = %v, want %v", tt.path, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("NormalizePath(%q) (-want +got):\n%s", tt.path, diff)
			}
		})
	}
}

// FuzzNormalizePath checks the properties grants rely on: a normalised path starts with "/", has no
// "." or ".." segment, no "//", no encoded or literal slash other than "/", and normalising it again
// changes nothing; and a path that matches a "/api/*" grant after normalisation is, segment by segment,
// below /api.
func FuzzNormalizePath(f *testing.F) {
	for _, p := range []string{"", "/", "/api/v1", "/api/", "//", "/./", "/a/../b", "a", "/a/.", "/a/..b",
		"/api/%2e%2e/admin", "/api/..%2fadmin", "/api/%2E%2e/%2e./x", "/%", "/%2", "/a%20b", "/a\\b", "/..%00/",
		"/api/%252e%252e/admin", "/./../.%2e//%2e/", "/pkg.Service/Method"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		n, err := NormalizePath(p)
		if err != nil {
			if !errors.Is(err, ErrEncodedSlash) && !errors.Is(err, ErrBadPath) {
				t.Fatalf("NormalizePath(%q): unexpected error %v", p, err)
			}
			return
		}
		if !strings.HasPrefix(n, "/") {
			t.Errorf("NormalizePath(%q) = %q: no leading slash", p, n)
		}
		if strings.Contains(n, "//") {
			t.Errorf("NormalizePath(%q) = %q: has //", p, n)
		}
		if strings.Contains(n, "\\") || strings.Contains(strings.ToUpper(n), "%2F") || strings.Contains(strings.ToUpper(n), "%5C") {
			t.Errorf("NormalizePath(%q) = %q: has a backslash or an encoded slash", p, n)
		}
		for seg := range strings.SplitSeq(n, "/") {
			if seg == "." || seg == ".." {
				t.Errorf("NormalizePath(%q) = %q: has a %q segment", p, n, seg)
			}
		}
		again, err := NormalizePath(n)
		if err != nil || again != n {
			t.Errorf("NormalizePath(%q) = %q, but NormalizePath(%q) = %q, %v: not idempotent", p, n, n, again, err)
		}
		if MatchPath("/api/*", n) && !strings.HasPrefix(n, "/api/") {
			t.Errorf("NormalizePath(%q) = %q matches /api/* outside /api/", p, n)
		}
	})
}
