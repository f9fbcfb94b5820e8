package grant

import (
	"errors"
	"fmt"
	"strings"
)

// Errors of [NormalizePath]; each wraps into an error naming the path.
var (
	// ErrEncodedSlash: the path has %2F or %5C. Whether that is a separator depends on the server behind
	// the proxy, so no grant can be matched safely. Envoy refuses the same request when configured with
	// path_with_escaped_slashes_action: REJECT_REQUEST.
	ErrEncodedSlash = errors.New("an encoded slash (%2F) or backslash (%5C) cannot be matched safely")
	// ErrBadPath: a backslash, a control character or a malformed percent-encoding.
	ErrBadPath = errors.New("not a valid request path")
)

// NormalizePath returns the request path p (without its query) as grants match it, the way Envoy
// forwards it with normalize_path, merge_slashes and path_with_escaped_slashes_action: REJECT_REQUEST:
// percent-encoded unreserved characters (RFC 3986 §2.3: letters, digits, - . _ ~) are decoded and other
// encodings upper-cased, repeated slashes merged, and "." and ".." segments removed (RFC 3986 §5.2.4;
// a final "." or ".." leaves a trailing slash, "/a/b/.." is "/a/"). So "/api/%2e%2e/admin" is "/admin".
// A path with an encoded slash or backslash is refused ([ErrEncodedSlash]), as is one with a backslash,
// a control character or a malformed percent-encoding ([ErrBadPath]). An empty path is "/"; one without
// a leading slash gets one.
//
// The result never has a "." or ".." segment or an empty one (but a trailing slash), and NormalizePath
// of it is itself.
func NormalizePath(p string) (string, error) {
	if isNormal(p) {
		return p, nil
	}
	var b strings.Builder
	b.Grow(len(p) + 1)
	if !strings.HasPrefix(p, "/") {
		b.WriteByte('/')
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '%':
			if i+2 >= len(p) || unhex(p[i+1]) < 0 || unhex(p[i+2]) < 0 {
				return "", fmt.Errorf("path %q: malformed percent-encoding at byte %d: %w", p, i, ErrBadPath)
			}
			d := byte(unhex(p[i+1])<<4 | unhex(p[i+2]))
			switch {
			case d == '/' || d == '\\':
				return "", fmt.Errorf("path %q: %w", p, ErrEncodedSlash)
			case unreserved(d):
				b.WriteByte(d)
			default:
				b.WriteByte('%')
				b.WriteByte(upperHex[d>>4])
				b.WriteByte(upperHex[d&15])
			}
			i += 2
		case c == '\\':
			return "", fmt.Errorf("path %q: a backslash is a separator to some servers and not to others: %w", p, ErrBadPath)
		case c < 0x20 || c == 0x7f:
			return "", fmt.Errorf("path %q: control character at byte %d: %w", p, i, ErrBadPath)
		default:
			b.WriteByte(c)
		}
	}
	return removeDots(b.String()), nil
}

// removeDots merges repeated slashes and removes "." and ".." segments of p, which starts with "/".
func removeDots(p string) string {
	segs := strings.Split(p[1:], "/")
	out := make([]string, 0, len(segs))
	trailing := false
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case "", ".":
			trailing = last
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			trailing = last
		default:
			out = append(out, s)
			trailing = false
		}
	}
	if len(out) == 0 {
		return "/"
	}
	n := "/" + strings.Join(out, "/")
	if trailing {
		n += "/"
	}
	return n
}

// isNormal reports whether NormalizePath(p) is p, quickly, for the common case: p starts with "/", has
// no "%", backslash or control character, and no empty (but a trailing), "." or ".." segment.
func isNormal(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c == '%' || c == '\\' || c < 0x20 || c == 0x7f {
			return false
		}
	}
	for i := 0; i < len(p); {
		j := i + 1
		for j < len(p) && p[j] != '/' {
			j++
		}
		if seg := p[i+1 : j]; seg == "." || seg == ".." || seg == "" && j < len(p) {
			return false
		}
		i = j
	}
	return true
}

const upperHex = "0123456789ABCDEF"

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}
