//go:build e2e

package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The command blocks of the docs are run by TestDocCommandBlocksRun, page by page, in order, as a reader
// pastes them into a terminal: each page in one bash session (`set -e -o pipefail`; variables, exports
// and the working directory carry from block to block), started in the repository root with the kith
// under test first in PATH. Every page gets its own network, mount and pid namespaces: a fresh /tmp (so
// the docs' /tmp/kith... paths are used as written), its own loopback (so the default ports 8080, 8081,
// 8443 are free) and nothing left running afterwards.
//
// Before a ```sh block, HTML comments tell the harness what the reader would do that is not a command:
//
//	<!-- doc-test: until Ctrl-C -->         the block runs in the background (a daemon) until the page
//	                                        ends, then gets SIGINT and must exit 0; the harness waits
//	                                        for its shown output before the next block
//	<!-- doc-test: not run: REASON -->      the block is not run (a reason is required)
//	<!-- doc-test: setup: SHELL -->         SHELL runs (hidden) in the page's session before the block
//	<!-- doc-test: let WORD = SHELL -->     every WORD in the block and its shown output is replaced by
//	                                        SHELL's output (placeholders such as TOKEN-ID that a reader
//	                                        fills in)
//	<!-- doc-test: on kith dev ARGS -->     anywhere on the page: the page runs against `kith dev ARGS`
//	                                        started before its first block, with its two export lines run
//
// An sh block that is not marked `not run` is run; there is no other way to skip one. So is a transcript:
// an untagged block of `$ COMMAND` lines, each followed by what it prints (its exit status is not
// checked: a transcript does not show it).
//
// Shown output: an untagged or ```text block right after an sh block (blank lines between allowed) is what
// the block prints. Each shown line must match a line of the output (stdout and stderr together), in order;
// other output lines may come between. Runs of blanks count as one; `<word>` (an ID, a time, a hash, a
// port) matches any text without blanks, `…` any text, and a line that is only `…` is skipped.

// docPages are the pages whose sh blocks are run, relative to the repository root.
func docPages(t *testing.T) []string {
	t.Helper()
	pages := []string{"README.md"}
	for _, glob := range []string{"docs/*.md", "docs/attestors/*.md"} {
		m, err := filepath.Glob(filepath.Join(repoRoot(t), glob))
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(m)
		for _, p := range m {
			rel, _ := filepath.Rel(repoRoot(t), p)
			pages = append(pages, rel)
		}
	}
	return pages
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// docBlock is one ```sh block of a page with what the markers before it say.
type docBlock struct {
	line    int      // of the opening fence, 1-based
	script  string   // the block's text
	shown   string   // the output shown after it; "" when none
	notRun  string   // the reason, when marked not run
	daemon  bool     // until Ctrl-C
	setup   []string // hidden shell lines run first
	lets    [][2]string
	isShown bool
	// transcript is set for an untagged block of `$ COMMAND` lines, each followed by its output: each
	// command runs (its exit status is not shown, so not checked) and must print what follows it.
	transcript [][2]string
}

// docPage is a page's sh blocks and the kith dev it runs against ("" for none).
type docPage struct {
	path   string
	dev    string // ARGS of `on kith dev ARGS`, or "" when the page has no such marker
	hasDev bool
	blocks []docBlock
}

var markerRE = regexp.MustCompile(`^<!-- doc-test: (.*?) -->\s*$`)

// parseDocPage reads the sh blocks and the markers of a page.
func parseDocPage(path, text string) (docPage, error) {
	page := docPage{path: path}
	lines := strings.Split(text, "\n")
	var pending docBlock // markers seen since the last fence
	havePending := false
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if m := markerRE.FindStringSubmatch(line); m != nil {
			kw := m[1]
			switch {
			case strings.HasPrefix(kw, "not run:"):
				pending.notRun = strings.TrimSpace(strings.TrimPrefix(kw, "not run:"))
				if pending.notRun == "" {
					return page, fmt.Errorf("%s:%d: `not run:` needs a reason", path, i+1)
				}
			case kw == "until Ctrl-C":
				pending.daemon = true
			case strings.HasPrefix(kw, "setup:"):
				pending.setup = append(pending.setup, strings.TrimSpace(strings.TrimPrefix(kw, "setup:")))
			case strings.HasPrefix(kw, "let "):
				word, sh, ok := strings.Cut(strings.TrimPrefix(kw, "let "), " = ")
				if !ok || strings.TrimSpace(word) == "" || strings.TrimSpace(sh) == "" {
					return page, fmt.Errorf("%s:%d: want `let WORD = SHELL`, got %q", path, i+1, kw)
				}
				pending.lets = append(pending.lets, [2]string{strings.TrimSpace(word), strings.TrimSpace(sh)})
			case strings.HasPrefix(kw, "on kith dev"):
				if page.hasDev {
					return page, fmt.Errorf("%s:%d: a second `on kith dev`", path, i+1)
				}
				page.dev, page.hasDev = strings.TrimSpace(strings.TrimPrefix(kw, "on kith dev")), true
				continue
			default:
				return page, fmt.Errorf("%s:%d: unknown doc-test marker %q (see test/e2e/docs_test.go)", path, i+1, kw)
			}
			havePending = true
			continue
		}
		if !strings.HasPrefix(line, "```") {
			continue
		}
		lang := strings.TrimSpace(strings.TrimPrefix(line, "```"))
		start := i
		var body []string
		for i++; i < len(lines) && !strings.HasPrefix(lines[i], "```"); i++ {
			body = append(body, lines[i])
		}
		if i == len(lines) {
			return page, fmt.Errorf("%s:%d: unclosed ``` block", path, start+1)
		}
		if (lang == "" || lang == "text") && len(body) > 0 && strings.HasPrefix(body[0], "$ ") {
			b := pending
			pending, havePending = docBlock{}, false
			if b.daemon {
				return page, fmt.Errorf("%s:%d: a transcript cannot run until Ctrl-C", path, start+1)
			}
			b.line = start + 1
			for _, l := range body {
				if cmd, ok := strings.CutPrefix(l, "$ "); ok {
					b.transcript = append(b.transcript, [2]string{cmd, ""})
				} else {
					b.transcript[len(b.transcript)-1][1] += l + "\n"
				}
			}
			page.blocks = append(page.blocks, b)
			continue
		}
		if lang != "sh" {
			if havePending {
				return page, fmt.Errorf("%s:%d: doc-test markers before a ```%s block: they apply only to ```sh blocks and transcripts", path, start+1, lang)
			}
			continue
		}
		b := pending
		pending, havePending = docBlock{}, false
		b.line, b.script = start+1, strings.Join(body, "\n")
		// Shown output: the next fence, past blank lines only, untagged or text.
		j := i + 1
		for j < len(lines) && strings.TrimSpace(lines[j]) == "" {
			j++
		}
		if j+1 < len(lines) && (lines[j] == "```" || lines[j] == "```text") && !strings.HasPrefix(lines[j+1], "$ ") {
			var shown []string
			for j++; j < len(lines) && !strings.HasPrefix(lines[j], "```"); j++ {
				shown = append(shown, lines[j])
			}
			b.shown, b.isShown = strings.Join(shown, "\n"), true
		}
		if b.daemon && b.notRun != "" {
			return page, fmt.Errorf("%s:%d: a block is either run until Ctrl-C or not run", path, b.line)
		}
		if b.daemon && !b.isShown {
			return page, fmt.Errorf("%s:%d: a block run until Ctrl-C needs its output shown after it (the harness waits for it)", path, b.line)
		}
		page.blocks = append(page.blocks, b)
	}
	if havePending {
		return page, fmt.Errorf("%s: doc-test markers after the last ```sh block", path)
	}
	return page, nil
}

// matchShown checks that every line of shown matches a line of out, in order.
func matchShown(shown, out string) error {
	outLines := strings.Split(out, "\n")
	k := 0
	for _, want := range strings.Split(shown, "\n") {
		want = strings.Join(strings.Fields(want), " ")
		if want == "" || want == "…" {
			continue
		}
		re := shownLineRE(want)
		for ; k < len(outLines); k++ {
			if re.MatchString(strings.Join(strings.Fields(outLines[k]), " ")) {
				break
			}
		}
		if k == len(outLines) {
			return fmt.Errorf("shown output line %q is not in the output (after the lines matched before it)", want)
		}
		k++
	}
	return nil
}

var placeholderRE = regexp.MustCompile(`<[A-Za-z0-9_-]+>|…`)

func shownLineRE(want string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	last := 0
	for _, m := range placeholderRE.FindAllStringIndex(want, -1) {
		b.WriteString(regexp.QuoteMeta(want[last:m[0]]))
		if want[m[0]:m[1]] == "…" {
			b.WriteString(".*")
		} else {
			b.WriteString(`\S+`)
		}
		last = m[1]
	}
	b.WriteString(regexp.QuoteMeta(want[last:]))
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

func readDocPage(t *testing.T, path string) docPage {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), path))
	if err != nil {
		t.Fatal(err)
	}
	page, err := parseDocPage(path, string(b))
	if err != nil {
		t.Fatal(err)
	}
	return page
}

// Every sh block in the docs is run or says why not; markers are well-formed. (No kith needed.)
func TestDocBlocksAreRunOrMarked(t *testing.T) {
	total, notRun := 0, 0
	for _, path := range docPages(t) {
		page := readDocPage(t, path)
		for _, b := range page.blocks {
			total++
			if b.notRun != "" {
				notRun++
			}
		}
	}
	if total == 0 {
		t.Fatal("found no ```sh blocks in the docs: is the page list right?")
	}
	t.Logf("%d sh blocks, %d run, %d marked not run", total, total-notRun, notRun)
}

func TestDocParserAndMatcher(t *testing.T) {
	page, err := parseDocPage("p.md", strings.Join([]string{
		"<!-- doc-test: on kith dev --trust-domain example.org -->",
		"```sh",
		"kith entry list",
		"```",
		"",
		"```",
		"ID <id>",
		"```",
		"<!-- doc-test: not run: needs Envoy -->",
		"```sh",
		"envoy -c x.yaml",
		"```",
		"```",
		"$ kith can a b",
		"DENIED: a → b",
		"$ kith version",
		"```",
		"<!-- doc-test: let TOKEN-ID = kith token list | awk 'NR==2{print $1}' -->",
		"```sh",
		"kith token revoke TOKEN-ID",
		"```",
		"```go",
		"x := 1",
		"```",
	}, "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if page.dev != "--trust-domain example.org" || len(page.blocks) != 4 {
		t.Fatalf("parsed %+v", page)
	}
	wantTranscript := [][2]string{{"kith can a b", "DENIED: a → b\n"}, {"kith version", ""}}
	if page.blocks[0].shown != "ID <id>" || page.blocks[1].notRun != "needs Envoy" ||
		fmt.Sprint(page.blocks[2].transcript) != fmt.Sprint(wantTranscript) || len(page.blocks[3].lets) != 1 {
		t.Errorf("parsed %+v", page.blocks)
	}
	for _, bad := range []string{
		"<!-- doc-test: not run: -->\n```sh\nx\n```",
		"<!-- doc-test: skip -->\n```sh\nx\n```",
		"<!-- doc-test: until Ctrl-C -->\n```sh\nx\n```\nprose\n",
		"<!-- doc-test: not run: r -->\n```go\nx\n```",
		"```sh\nx\n```\n<!-- doc-test: setup: y -->",
	} {
		if _, err := parseDocPage("p.md", bad); err == nil {
			t.Errorf("parseDocPage accepted %q", bad)
		}
	}
	tests := []struct {
		shown, out string
		ok         bool
	}{
		{"Token: <token>\nName:  node1", "Token:    abc-_x\nName:     node1\n", true},
		{"Name: node1\nToken: <token>", "Token: abc\nName: node1\n", false},
		{"… level=INFO msg=\"x\" id=…", "time=2026 level=INFO msg=\"x\" id=spiffe://a/b c=d\n", true},
		{"HTTP: http://127.0.0.1:<port> (/healthz)", "HTTP: http://127.0.0.1:8080 (/healthz)", true},
		{"exit <n>", "exit 1 2", false},
		{"…\nb", "a\nb\n", true},
	}
	for _, tc := range tests {
		if err := matchShown(tc.shown, tc.out); (err == nil) != tc.ok {
			t.Errorf("matchShown(%q, %q) = %v, want ok %v", tc.shown, tc.out, err, tc.ok)
		}
	}
}

// docSession is one page's bash, in its own namespaces, fed blocks on stdin.
type docSession struct {
	t       *testing.T
	dir     string // outside path of the session's /tmp
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	status  *bufio.Reader
	stderr  strings.Builder
	n       int
	daemons []int // step numbers of daemon blocks, in start order
	exited  bool
}

// inner is the session's path of a harness file.
func (s *docSession) inner(name string) string { return "/tmp/.doctest/" + name }
func (s *docSession) outer(name string) string { return filepath.Join(s.dir, ".doctest", name) }

func unshareArgs() []string {
	args := []string{"unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc"}
	if os.Geteuid() != 0 {
		args = append(args, "--map-root-user")
	}
	return args
}

func startDocSession(t *testing.T, kithBinary string) *docSession {
	t.Helper()
	dir := shortTempDir(t)
	if err := os.MkdirAll(filepath.Join(dir, ".doctest", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The repository and the binary are bound into the session's /tmp before it covers /tmp, so they stay
	// in sight when they live under /tmp themselves (a CI checkout in /tmp, a binary in a temp dir).
	for _, d := range []string{"repo", "kithbin"} {
		if err := os.MkdirAll(filepath.Join(dir, ".doctest", d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/tmp/.doctest/kithbin/"+filepath.Base(kithBinary), filepath.Join(dir, ".doctest", "bin", "kith")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o1777); err != nil { // as /tmp is
		t.Fatal(err)
	}
	s := &docSession{t: t, dir: dir}
	inside := fmt.Sprintf("mount --bind %[2]s %[1]s/.doctest/repo && mount --bind %[3]s %[1]s/.doctest/kithbin && "+
		"mount --rbind %[1]s /tmp && ip link set lo up && cd /tmp/.doctest/repo && exec bash -e -o pipefail",
		shellQuote(dir), shellQuote(repoRoot(t)), shellQuote(filepath.Dir(kithBinary)))
	s.cmd = exec.Command(unshareArgs()[0], append(unshareArgs()[1:], "bash", "-c", inside)...)
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "KITH_") || strings.HasPrefix(kv, "SPIFFE_") || strings.HasPrefix(kv, "PATH=") {
			continue
		}
		env = append(env, kv)
	}
	s.cmd.Env = append(env, "PATH=/tmp/.doctest/bin:"+os.Getenv("PATH"))
	stdin, err := s.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	s.stdin, s.status = stdin, bufio.NewReader(pr)
	s.cmd.ExtraFiles = []*os.File{pw}
	s.cmd.Stdout, s.cmd.Stderr = &s.stderr, &s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start the docs' shell: %v", err)
	}
	pw.Close()
	t.Cleanup(func() {
		s.stdin.Close()
		done := make(chan struct{})
		go func() { s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill() // pid 1 of the namespace: everything in it goes too
			<-done
		}
		pr.Close()
	})
	return s
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// errShellExited means a command of the block failed (set -e) and the session is over.
var errShellExited = errors.New("the shell exited")

// run runs script in the session and returns what it printed (stdout and stderr).
func (s *docSession) run(script string, timeout time.Duration) (string, error) {
	s.t.Helper()
	if s.exited {
		return "", errShellExited
	}
	s.n++
	n := s.n
	out := "out." + strconv.Itoa(n)
	fmt.Fprintf(s.stdin, "{\n%s\n} </dev/null >%s 2>&1 3>&-\necho %d >&3\n", script, s.inner(out), n)
	line := make(chan error, 1)
	go func() {
		got, err := s.status.ReadString('\n')
		if err == nil && strings.TrimSpace(got) != strconv.Itoa(n) {
			err = fmt.Errorf("status %q, want %d", got, n)
		}
		line <- err
	}()
	var err error
	select {
	case err = <-line:
	case <-time.After(timeout):
		s.cmd.Process.Kill()
		err = fmt.Errorf("still running after %s", timeout)
		<-line
	}
	b, _ := os.ReadFile(s.outer(out))
	if err != nil {
		s.exited = true
		if errors.Is(err, io.EOF) {
			s.cmd.Wait()
			return string(b), fmt.Errorf("%w (%v)", errShellExited, s.cmd.ProcessState)
		}
		return string(b), err
	}
	return string(b), nil
}

// startDaemon runs script in the background, in its own process group, until stopDaemons.
func (s *docSession) startDaemon(script, shown string, timeout time.Duration) (string, error) {
	s.t.Helper()
	s.n++
	n := s.n
	name := "daemon." + strconv.Itoa(n)
	body := fmt.Sprintf("echo $$ >%s\n%s\n", s.inner(name+".pid"), script)
	if err := os.WriteFile(s.outer(name+".sh"), []byte(body), 0o644); err != nil {
		s.t.Fatal(err)
	}
	// setsid: the daemon's bash leads its own process group, so SIGINT reaches what it runs.
	launch := fmt.Sprintf("( setsid bash -e -o pipefail %s </dev/null >%s 2>&1 3>&-; echo $? >%s ) 3>&- &",
		s.inner(name+".sh"), s.inner(name), s.inner(name+".exit"))
	s.n-- // run counts its own step
	if _, err := s.run(launch, 10*time.Second); err != nil {
		return "", err
	}
	s.daemons = append(s.daemons, n)
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(s.outer(name))
		if matchShown(shown, string(b)) == nil {
			return string(b), nil
		}
		if code, err := os.ReadFile(s.outer(name + ".exit")); err == nil {
			return string(b), fmt.Errorf("exited (status %s) before printing its shown output", strings.TrimSpace(string(code)))
		}
		if time.Now().After(deadline) {
			return string(b), fmt.Errorf("not ready within %s: %v", timeout, matchShown(shown, string(b)))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stopDaemons sends SIGINT to every daemon, newest first, as Ctrl-C would, and checks each exits 0.
func (s *docSession) stopDaemons() {
	s.t.Helper()
	if s.exited {
		return // the namespace is gone, and everything in it
	}
	for i := len(s.daemons) - 1; i >= 0; i-- {
		name := "daemon." + strconv.Itoa(s.daemons[i])
		if _, err := os.Stat(s.outer(name + ".exit")); err == nil {
			b, _ := os.ReadFile(s.outer(name))
			s.t.Errorf("%s (a block run until Ctrl-C) exited by itself:\n%s", name, b)
			continue
		}
		if _, err := s.run(fmt.Sprintf("kill -INT -- -$(cat %s)", s.inner(name+".pid")), 10*time.Second); err != nil {
			s.t.Errorf("Ctrl-C %s: %v", name, err)
			return
		}
		var code []byte
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if c, err := os.ReadFile(s.outer(name + ".exit")); err == nil && len(c) > 0 {
				code = c
				break
			}
		}
		b, _ := os.ReadFile(s.outer(name))
		switch c := strings.TrimSpace(string(code)); c {
		case "0":
		case "":
			s.t.Errorf("%s did not exit within 20s of Ctrl-C:\n%s", name, b)
		default:
			s.t.Errorf("%s exited %s on Ctrl-C, want 0:\n%s", name, c, b)
		}
	}
	s.daemons = nil
}

// Every ```sh block of README.md and docs/ runs, as written and in order, and prints what the doc shows.
func TestDocCommandBlocksRun(t *testing.T) {
	bin := kithBin(t)
	if out, err := exec.Command(unshareArgs()[0], append(unshareArgs()[1:], "true")...).CombinedOutput(); err != nil {
		t.Skipf("the docs run in their own network, mount and pid namespaces, and unshare fails here: %v %s", err, out)
	}
	for _, path := range docPages(t) {
		page := readDocPage(t, path)
		if len(page.blocks) == 0 && !page.hasDev {
			continue
		}
		t.Run(strings.ReplaceAll(path, "/", "_"), func(t *testing.T) {
			s := startDocSession(t, bin)
			defer s.stopDaemons()
			if page.hasDev {
				args := "kith dev " + page.dev
				if _, err := s.startDaemon(args, "Press Ctrl-C to stop.", 60*time.Second); err != nil {
					t.Fatalf("%s: `on %s`: %v\n%s", path, args, err, s.stderr.String())
				}
				devOut := s.inner("daemon." + strconv.Itoa(s.daemons[0]))
				if _, err := s.run(fmt.Sprintf(`eval "$(sed -n 's/^ *export /export /p' %s)"`, devOut), 10*time.Second); err != nil {
					t.Fatalf("%s: the export lines of kith dev: %v", path, err)
				}
			}
			for _, b := range page.blocks {
				where := fmt.Sprintf("%s:%d", path, b.line)
				if b.notRun != "" {
					t.Logf("%s: not run: %s", where, b.notRun)
					continue
				}
				for _, sh := range b.setup {
					if out, err := s.run(sh, 2*time.Minute); err != nil {
						t.Fatalf("%s: setup %q: %v\n%s", where, sh, err, out)
					}
				}
				if b.transcript != nil {
					for _, step := range b.transcript {
						out, err := s.run("{ "+step[0]+"\n} || :", time.Minute)
						if err != nil {
							t.Fatalf("%s: $ %s: %v\n%s", where, step[0], err, out)
						}
						t.Logf("%s: $ %s\n%s", where, step[0], out)
						if err := matchShown(step[1], out); err != nil {
							t.Errorf("%s: $ %s: %v\noutput:\n%s", where, step[0], err, out)
						}
					}
					continue
				}
				script, shown := b.script, b.shown
				for _, let := range b.lets {
					out, err := s.run(let[1], time.Minute)
					if err != nil {
						t.Fatalf("%s: let %s: %v\n%s", where, let[0], err, out)
					}
					value := strings.TrimSpace(out)
					if value == "" || strings.ContainsAny(value, "\n") {
						t.Fatalf("%s: let %s = %s gave %q: want one line", where, let[0], let[1], out)
					}
					script = strings.ReplaceAll(script, let[0], value)
					shown = strings.ReplaceAll(shown, let[0], value)
				}
				if b.daemon {
					out, err := s.startDaemon(script, shown, 45*time.Second)
					if err != nil {
						t.Fatalf("%s: block (until Ctrl-C):\n%s\n%v\noutput:\n%s", where, script, err, out)
					}
					continue
				}
				out, err := s.run(script, 5*time.Minute)
				if err != nil {
					t.Fatalf("%s: block:\n%s\n%v\noutput:\n%s%s", where, script, err, out, s.stderr.String())
				}
				t.Logf("%s:\n%s\n--- printed:\n%s", where, script, out)
				if b.isShown {
					if err := matchShown(shown, out); err != nil {
						t.Errorf("%s: %v\nblock:\n%s\noutput:\n%s", where, err, script, out)
					}
				}
			}
		})
	}
}
