package cli

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// shellWords splits a command line as sh would for the commands in the docs: words separated by blanks,
// single and double quotes, a comment from an unquoted #. Anything else (pipes, $) is an error.
func shellWords(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(line); i++ {
		switch c := line[i]; {
		case c == ' ' || c == '\t':
			if inWord {
				words, inWord = append(words, cur.String()), false
				cur.Reset()
			}
		case c == '#' && !inWord:
			i = len(line)
		case c == '\'' || c == '"':
			end := strings.IndexByte(line[i+1:], c)
			if end < 0 {
				return nil, fmt.Errorf("unclosed %c in %q", c, line)
			}
			cur.WriteString(line[i+1 : i+1+end])
			i, inWord = i+1+end, true
		case c == '|' || c == '$' || c == '>' || c == '<' || c == ';' || c == '&':
			return nil, fmt.Errorf("%q needs a shell (%c)", line, c)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// docBlock returns the lines of the first ```sh block of a docs page that contains marker.
func docBlock(t *testing.T, page, marker string) []string {
	t.Helper()
	b, err := os.ReadFile("../../docs/" + page)
	if err != nil {
		t.Fatal(err)
	}
	for _, block := range strings.Split(string(b), "```sh\n")[1:] {
		block, _, _ = strings.Cut(block, "```")
		if strings.Contains(block, marker) {
			return strings.Split(strings.TrimSpace(block), "\n")
		}
	}
	t.Fatalf("docs/%s has no sh block with %q", page, marker)
	return nil
}

// The CLI walkthrough of docs/authorization.md runs, as written and in order, on a fresh kith dev.
func TestAuthorizationDocRunsOnAFreshDev(t *testing.T) {
	d := startDev(t)
	for _, line := range docBlock(t, "authorization.md", "kith grant frontend payments") {
		words, err := shellWords(line)
		if err != nil {
			t.Fatal(err)
		}
		if len(words) == 0 || words[0] != "kith" {
			t.Fatalf("%q is not a kith command", line)
		}
		out, errs, code := d.kith(words[1:]...)
		if code != 0 {
			t.Errorf("%s: exit %d\n%s%s", line, code, out, errs)
		}
	}
}
