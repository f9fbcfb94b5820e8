package cli

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/internal/testutil"
)

// run runs the CLI with no server: the admin socket is a path where nothing listens.
func run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "admin.sock")
	var out, errb bytes.Buffer
	code = MainEnv(context.Background(), args, &out, &errb, func(k string) string {
		if k == "KITH_ADMIN_SOCKET" {
			return sock
		}
		return ""
	})
	return out.String(), errb.String(), code
}

func TestUsageErrorsExit2AndSayWhatWasMeant(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"a typo in a subcommand suggests the nearest", []string{"entry", "lsit"}, `unknown command "lsit" for "kith entry"; did you mean "list"?`},
		{"a typo in a policy subcommand suggests the nearest", []string{"policy", "stauts"}, `unknown command "stauts" for "kith policy"; did you mean "status"?`},
		{"a subcommand far from any lists what there is", []string{"token", "frobnicate"}, `unknown command "frobnicate" for "kith token"; kith token has: create, jwt, list, revoke`},
		{"a group without a subcommand names its subcommands", []string{"grants"}, "kith grants needs a subcommand: list"},
		{"a typo in a top-level verb suggests the nearest", []string{"polcy"}, `unknown command "polcy" for "kith"; did you mean "policy"?`},
		{"can without arguments", []string{"can"}, "kith can takes CALLER and TARGET"},
		{"can with one argument", []string{"can", "frontend"}, "kith can takes CALLER and TARGET"},
		{"an output format that does not exist", []string{"can", "a", "b", "-o", "yaml"}, `-o "yaml": use table or json`},
		{"an unknown flag", []string{"entry", "list", "--bogus"}, "unknown flag: --bogus (see kith entry list --help)"},
		{"arguments to a verb that takes none", []string{"token", "list", "extra"}, `kith token list takes no arguments, got "extra"`},
		{"a grant for zero time", []string{"grant", "a", "b", "--for", "0"}, "--for 0s: the grant must last a positive time"},
		{"a grant for zero seconds", []string{"grant", "a", "b", "--for", "0s"}, "--for 0s: the grant must last a positive time"},
		{"a grant for a negative time", []string{"grant", "a", "b", "--for", "-5m"}, "--for -5m0s: the grant must last a positive time"},
		{"a grant with --for and --until", []string{"grant", "a", "b", "--for", "1h", "--until", "2030-01-01T00:00:00Z"}, "give --for or --until, not both"},
		{"a duration that does not parse", []string{"grant", "a", "b", "--for", "2x"}, `invalid duration "2x": want e.g. 90s, 1h, 7d`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errs, code := run(t, tt.args...)
			if code != 2 || !strings.Contains(errs, tt.want) {
				t.Errorf("kith %s: exit %d, stderr %q; want exit 2 and %q", strings.Join(tt.args, " "), code, errs, tt.want)
			}
		})
	}
}

func TestDurationFlagsTakeDays(t *testing.T) {
	// With no server the verb fails at the admin socket, after its flags parsed: exit 1, not a usage error.
	for _, args := range [][]string{
		{"grant", "a", "b", "--for", "2d"},
		{"token", "create", "--ttl", "1d"},
		{"entry", "create", "--spiffe-id", "spiffe://example.org/x", "--selector", "unix:uid:1", "--ttl", "90d"},
		{"svid", "mint", "jwt", "--spiffe-id", "spiffe://example.org/x", "--audience", "a", "--ttl", "1d12h"},
	} {
		_, errs, code := run(t, args...)
		if code != 1 || !strings.Contains(errs, "admin socket") {
			t.Errorf("kith %s: exit %d, stderr %q; want the flags accepted and exit 1 at the missing admin socket", strings.Join(args, " "), code, errs)
		}
	}
}

func TestVersion(t *testing.T) {
	out, errs, code := run(t, "version")
	if code != 0 || !strings.HasPrefix(out, "kith ") || !strings.Contains(out, "go1.") {
		t.Fatalf("kith version: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	flag, _, _ := run(t, "--version")
	if flag != out {
		t.Errorf("kith --version = %q, kith version = %q: want the same line", flag, out)
	}
	js, _, code := run(t, "version", "-o", "json")
	var v buildInfo
	if err := json.Unmarshal([]byte(js), &v); code != 0 || err != nil || v.Version == "" || v.GoVersion == "" {
		t.Errorf("kith version -o json: exit %d, %q (%v)", code, js, err)
	}
}

func TestEveryListingVerbHonoursOutputJSON(t *testing.T) {
	s := startServer(t, t.TempDir())
	s.ok(t, "entry", "create", "--spiffe-id", "spiffe://example.org/frontend", "--selector", "unix:uid:1001", "--node-selector", "join_token:name:n1")
	s.ok(t, "entry", "create", "--spiffe-id", "spiffe://example.org/payments", "--selector", "unix:uid:1002", "--node-selector", "join_token:name:n1")
	s.ok(t, "grant", "spiffe://example.org/frontend", "spiffe://example.org/payments", "--method", "GET")
	for _, args := range [][]string{
		{"policy", "status"},
		{"policy", "history"},
		{"bundle", "show"},
		{"graph"},
		{"entry", "list"},
		{"grants", "list"},
		{"token", "list"},
		{"agents", "list"},
		{"audit", "list"},
		{"ca", "show"},
		{"version"},
	} {
		out := s.ok(t, append(args, "-o", "json")...)
		var v any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Errorf("kith %s -o json is not JSON (%v):\n%s", strings.Join(args, " "), err, out)
		}
	}
	var graph struct {
		Nodes []string
		Edges []struct{ Caller, Target string }
	}
	if err := json.Unmarshal([]byte(s.ok(t, "graph", "-o", "json")), &graph); err != nil || len(graph.Edges) != 1 ||
		graph.Edges[0].Caller != "spiffe://example.org/frontend" || len(graph.Nodes) != 2 {
		t.Errorf("kith graph -o json = %+v (%v), want one edge frontend → payments between two nodes", graph, err)
	}
	if _, errs, code := s.kith(t, "bundle", "show", "--format", "pem", "-o", "json"); code != 2 || !strings.Contains(errs, "give one") {
		t.Errorf("bundle show --format pem -o json: exit %d, %q; want a usage error", code, errs)
	}
}

func TestPolicyStatusAlignsItsAgentTableWithSpaces(t *testing.T) {
	e := &env{}
	var out bytes.Buffer
	e.stdout = &out
	e.policyStatusText(&adminv1.GetPolicyStatusResponse{
		ActiveRevision: "abc",
		Agents: []*adminv1.AgentPolicy{
			{AgentId: "spiffe://example.org/kith/agent/join_token/a-long-name", Revision: "abc"},
			{AgentId: "spiffe://example.org/kith/agent/join_token/n", Revision: "abc"},
		},
	})
	if strings.Contains(out.String(), "\t") {
		t.Errorf("policy status output has tabs:\n%s", out.String())
	}
	lines := strings.Split(out.String(), "\n")
	var header, row string
	for i, l := range lines {
		if strings.HasPrefix(l, "AGENT") {
			header, row = l, lines[i+1]
		}
	}
	if strings.Index(header, "REVISION") != strings.Index(row, "abc") {
		t.Errorf("REVISION column not aligned:\n%s\n%s", header, row)
	}
}

func TestServerHealthcheck(t *testing.T) {
	s := startServer(t, t.TempDir())
	if out := s.ok(t, "server", "healthcheck"); out != "Server is healthy.\n" {
		t.Errorf("healthy server: stdout %q", out)
	}
	if out := s.ok(t, "server", "healthcheck", "--quiet"); out != "" {
		t.Errorf("--quiet: stdout %q, want nothing", out)
	}
	s.stop()
	out, errs, code := s.kith(t, "server", "healthcheck", "--timeout", "200ms")
	if code != 1 || out != "" || !strings.Contains(errs, "server is unhealthy") {
		t.Errorf("stopped server: exit %d, stdout %q, stderr %q; want exit 1 and 'server is unhealthy'", code, out, errs)
	}
	_, errs, code = run(t, "server", "healthcheck")
	if code != 1 || !strings.Contains(errs, "is `kith server` running?") {
		t.Errorf("no admin socket: exit %d, stderr %q", code, errs)
	}
}

func TestMintX509KeepsTheKeyOffTheTerminalUnlessAsked(t *testing.T) {
	s := startServer(t, t.TempDir())
	dir := t.TempDir()

	out, errs, code := s.kith(t, "svid", "mint", "x509", "--spiffe-id", "spiffe://example.org/app")
	if code != 2 || strings.Contains(out, "PRIVATE KEY") || !strings.Contains(errs, "--out-key is required") {
		t.Errorf("no --out-key: exit %d, stdout %q, stderr %q; want a usage error and no key", code, out, errs)
	}

	out = s.ok(t, "svid", "mint", "x509", "--spiffe-id", "spiffe://example.org/app", "--out-key", "-")
	if !strings.Contains(out, "CERTIFICATE") || !strings.Contains(out, "PRIVATE KEY") {
		t.Errorf("--out-key -: stdout has no certificate and key:\n%s", out)
	}

	keyFile := filepath.Join(dir, "app.key")
	out = s.ok(t, "svid", "mint", "x509", "--spiffe-id", "spiffe://example.org/app", "--out-key", keyFile)
	if !strings.Contains(out, "CERTIFICATE") || strings.Contains(out, "PRIVATE KEY") || !strings.Contains(out, "wrote "+keyFile) {
		t.Errorf("--out-key FILE alone: want the chain on stdout and the key in the file:\n%s", out)
	}

	// The chain written as PEM verifies against the PEM roots of `kith bundle show`, as against the SPIFFE bundle.
	certFile, roots, doc := filepath.Join(dir, "app.pem"), filepath.Join(dir, "roots.pem"), filepath.Join(dir, "bundle.json")
	s.ok(t, "svid", "mint", "x509", "--spiffe-id", "spiffe://example.org/app", "--out-cert", certFile, "--out-key", keyFile)
	writeFile(t, roots, s.ok(t, "bundle", "show"))
	writeFile(t, doc, s.ok(t, "bundle", "show", "--format", "spiffe"))
	for _, b := range []string{roots, doc} {
		if out := s.ok(t, "svid", "verify", "--cert", certFile, "--bundle", b); !strings.Contains(out, "valid X.509-SVID for spiffe://example.org/app") {
			t.Errorf("verify --bundle %s: %q", filepath.Base(b), out)
		}
	}
	writeFile(t, filepath.Join(dir, "junk"), "not a bundle")
	if _, errs, code := s.kith(t, "svid", "verify", "--cert", certFile, "--bundle", filepath.Join(dir, "junk")); code == 0 || !strings.Contains(errs, "neither PEM roots nor a SPIFFE bundle") {
		t.Errorf("verify with a junk bundle: exit %d, %q", code, errs)
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLongRunningCommandsListOnlyTheFlagsThatApply(t *testing.T) {
	for _, verb := range []string{"server", "agent", "dev"} {
		out, _, code := run(t, verb, "--help")
		if code != 0 || strings.Contains(out, "--admin-socket") || strings.Contains(out, "--output") || !strings.Contains(out, "--help") {
			t.Errorf("kith %s --help (exit %d) lists global flags that do not apply:\n%s", verb, code, out)
		}
	}
	for _, args := range [][]string{{"server", "healthcheck", "--help"}, {"entry", "list", "--help"}} {
		if out, _, _ := run(t, args...); !strings.Contains(out, "--admin-socket") {
			t.Errorf("kith %s lost the global flags:\n%s", strings.Join(args, " "), out)
		}
	}
}

func TestAFailedDevStartLeavesNoTempDirBehind(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, errs, code := run(t, "dev", "--http", busy.Addr().String())
	if code == 0 {
		t.Fatalf("kith dev on a busy --http port exited 0: %s", errs)
	}
	left, _ := filepath.Glob(filepath.Join(tmp, "kith-dev-*"))
	if len(left) > 0 {
		t.Errorf("kith dev failed (%s) and left %v behind", strings.TrimSpace(errs), left)
	}
}

func TestAuditListNewestFirstSinceAndFollow(t *testing.T) {
	s := startServer(t, t.TempDir())
	for _, name := range []string{"n1", "n2", "n3"} {
		s.ok(t, "token", "create", "--name", name)
	}
	seqs := func(args ...string) []int64 {
		t.Helper()
		var resp struct{ Events []struct{ Seq string } }
		if err := json.Unmarshal([]byte(s.ok(t, append([]string{"audit", "list", "-o", "json"}, args...)...)), &resp); err != nil {
			t.Fatal(err)
		}
		var out []int64
		for _, ev := range resp.Events {
			n, _ := strconv.ParseInt(ev.Seq, 10, 64)
			out = append(out, n)
		}
		return out
	}
	all := seqs()
	if len(all) < 3 || !slices.IsSortedFunc(all, func(a, b int64) int { return cmp.Compare(b, a) }) {
		t.Fatalf("audit list: seqs %v, want newest first", all)
	}
	if got := seqs("--oldest-first"); !slices.IsSorted(got) || len(got) != len(all) {
		t.Errorf("--oldest-first: %v", got)
	}
	if got := seqs("--limit", "2"); !slices.Equal(got, all[:2]) {
		t.Errorf("--limit 2: %v, want the newest two %v", got, all[:2])
	}
	if got := seqs("--since", "1h"); !slices.Equal(got, all) {
		t.Errorf("--since 1h: %v, want all %v", got, all)
	}
	if got := seqs("--since", "2099-01-01T00:00:00Z"); len(got) != 0 {
		t.Errorf("--since 2099: %v, want none", got)
	}
	if _, errs, code := s.kith(t, "audit", "list", "--since", "yesterday"); code != 2 || !strings.Contains(errs, "RFC 3339") {
		t.Errorf("--since yesterday: exit %d, %q", code, errs)
	}

	// --follow prints the newest, then what is written while it runs, until interrupted.
	ctx, cancel := context.WithCancel(context.Background())
	var out testutil.Buffer
	done := make(chan int, 1)
	go func() {
		done <- MainEnv(ctx, []string{"audit", "list", "--follow", "--limit", "1"}, &out, io.Discard, func(k string) string {
			if k == "KITH_ADMIN_SOCKET" {
				return s.socket
			}
			return ""
		})
	}()
	waitFor := func(events int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); strings.Count(out.String(), "token.create") < events; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				cancel()
				t.Fatalf("--follow never printed %d events:\n%s", events, out.String())
			}
		}
	}
	waitFor(1)
	s.ok(t, "token", "create", "--name", "n4")
	waitFor(2)
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("--follow interrupted: exit %d, want 0", code)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], strconv.FormatInt(all[0], 10)+" ") || !strings.HasPrefix(lines[2], strconv.FormatInt(all[0]+1, 10)+" ") {
		t.Errorf("--follow --limit 1 printed:\n%s\nwant a header, event %d, then the new event %d", out.String(), all[0], all[0]+1)
	}
}

func TestEntryShowTakesAnEntryIDASPIFFEIDOrAShortName(t *testing.T) {
	s := startServer(t, t.TempDir())
	var created struct{ Id string }
	if err := json.Unmarshal([]byte(s.ok(t, "entry", "create", "--spiffe-id", "spiffe://example.org/ns/prod/payments", "--selector", "unix:uid:1001", "--node-selector", "join_token:name:n1", "-o", "json")), &created); err != nil {
		t.Fatal(err)
	}
	for _, arg := range []string{created.Id, "spiffe://example.org/ns/prod/payments", "payments", "prod/payments"} {
		out, errs, code := s.kith(t, "entry", "show", arg)
		if code != 0 || !strings.Contains(out, "ID:             "+created.Id) || !strings.Contains(out, "unix:uid:1001") {
			t.Errorf("entry show %s: exit %d, %q %q", arg, code, out, errs)
		}
	}
	s.ok(t, "entry", "create", "--spiffe-id", "spiffe://example.org/ns/prod/payments", "--selector", "unix:uid:1002", "--node-selector", "join_token:name:n2")
	if out := s.ok(t, "entry", "show", "payments"); strings.Count(out, "SPIFFE ID:      spiffe://example.org/ns/prod/payments") != 2 {
		t.Errorf("entry show of a name with two entries shows:\n%s", out)
	}
	if _, errs, code := s.kith(t, "entry", "show", "nosuch"); code != 1 || !strings.Contains(errs, `entry "nosuch" not found, and it is not a registered identity`) {
		t.Errorf("entry show nosuch: exit %d, %q", code, errs)
	}
}

func TestDevServesTheAgentsMetricsWithTheServers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var out testutil.Buffer
	done := make(chan int, 1)
	go func() {
		done <- MainEnv(ctx, []string{"dev", "--data-dir", t.TempDir(), "--http", "127.0.0.1:0", "--log-level", "warn"}, &out, io.Discard, func(string) string { return "" })
	}()
	defer func() {
		cancel()
		<-done
	}()
	var addr string
	for deadline := time.Now().Add(20 * time.Second); addr == ""; time.Sleep(20 * time.Millisecond) {
		for _, line := range strings.Split(out.String(), "\n") {
			if rest, ok := strings.CutPrefix(line, "HTTP:"); ok {
				addr, _, _ = strings.Cut(strings.TrimSpace(rest), " ")
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("kith dev printed no HTTP address:\n%s", out.String())
		}
	}
	resp, err := http.Get(addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, name := range []string{"kith_store_revision", "kith_sds_nack_total"} { // the server's, the agent's
		if !strings.Contains(string(body), "\n"+name+" ") {
			t.Errorf("kith dev's /metrics lacks %s:\n%.2000s", name, body)
		}
	}
}

func TestEntryCreateFromAFile(t *testing.T) {
	s := startServer(t, t.TempDir())
	dir := t.TempDir()
	yamlFile := filepath.Join(dir, "entries.yaml")
	writeFile(t, yamlFile, `
- spiffe_id: spiffe://example.org/ns/prod/web
  node_selectors: [join_token:name:n1]
  selectors: [unix:uid:1001]
  x509_ttl_seconds: 600
  labels: {env: prod}
- spiffe_id: spiffe://example.org/ns/prod/db
  parent_id: spiffe://example.org/kith/agent/join_token/n1
  selectors: [unix:uid:1002, unix:gid:50]
`)
	s.ok(t, "entry", "create", "--data", yamlFile)
	listing := s.ok(t, "entry", "list", "-o", "json")
	for _, want := range []string{`"spiffe://example.org/ns/prod/web"`, `"spiffe://example.org/ns/prod/db"`, `"x509_ttl_seconds":\s*"600"`, `"env":\s*"prod"`} {
		if !regexp.MustCompile(want).MatchString(listing) {
			t.Errorf("after --data, the listing lacks %s:\n%s", want, listing)
		}
	}

	// What `kith entry list -o json` prints loads into another server as it is.
	jsonFile := filepath.Join(dir, "entries.json")
	writeFile(t, jsonFile, listing)
	other := startServer(t, t.TempDir())
	other.ok(t, "entry", "create", "--data", jsonFile)
	if got := other.ok(t, "entry", "list"); !strings.Contains(got, "spiffe://example.org/ns/prod/web") || !strings.Contains(got, "spiffe://example.org/ns/prod/db") {
		t.Errorf("the listing did not load into another server:\n%s", got)
	}

	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, `
- spiffe_id: spiffe://example.org/ok
  selectors: [unix:uid:1]
  node_selectors: [join_token:name:n1]
- spiffe_id: not-an-id
  selectors: [unix:uid:1]
  node_selectors: [join_token:name:n1]
- spiffe_id: spiffe://example.org/no-selectors
  node_selectors: [join_token:name:n1]
`)
	before := other.ok(t, "entry", "list", "-o", "json")
	_, errs, code := other.kith(t, "entry", "create", "--data", bad)
	if code == 0 || !strings.Contains(errs, "2 of 3 entries are invalid, none was created") || !strings.Contains(errs, "entry 1:") || !strings.Contains(errs, "entry 2:") {
		t.Errorf("a file with two bad entries: exit %d, %q; want both named by index", code, errs)
	}
	if after := other.ok(t, "entry", "list", "-o", "json"); after != before {
		t.Errorf("a refused file changed the entries")
	}
	for name, text := range map[string]string{"scalar": "42", "wrong key": "entrys: []", "unknown field": "- spiffe_id: spiffe://example.org/x\n  selector: [unix:uid:1]"} {
		f := filepath.Join(dir, "junk")
		writeFile(t, f, text)
		if _, errs, code := other.kith(t, "entry", "create", "--data", f); code == 0 || !strings.Contains(errs, "--data "+f) {
			t.Errorf("%s: exit %d, %q", name, code, errs)
		}
	}
	if _, errs, code := other.kith(t, "entry", "create", "--data", bad, "--spiffe-id", "spiffe://example.org/x"); code != 2 || !strings.Contains(errs, "give one or the other") {
		t.Errorf("--data with --spiffe-id: exit %d, %q", code, errs)
	}
}

// What is well-formed but matches nothing known now is warned about (exit 0), or refused with --strict.
func TestWhatMatchesNothingIsWarnedAboutOrRefusedWithStrict(t *testing.T) {
	s := startServer(t, t.TempDir())
	s.ok(t, "entry", "create", "--spiffe-id", "spiffe://example.org/payments", "--selector", "unix:uid:1001", "--node-selector", "join_token:name:n1")
	s.ok(t, "entry", "create", "--spiffe-id", "spiffe://example.org/frontend", "--selector", "unix:uid:1002", "--node-selector", "join_token:name:n1")
	tests := []struct {
		name string
		args []string
		warn string // "" : no warning
	}{
		{"a grant between registered identities", []string{"grant", "spiffe://example.org/frontend", "spiffe://example.org/payments"}, ""},
		{"a grant to a typo", []string{"grant", "spiffe://example.org/frontend", "spiffe://example.org/paymnets"}, "no registered identity is spiffe://example.org/paymnets (the target)"},
		{"a grant from a prefix nothing is under", []string{"grant", "spiffe://example.org/ns/dev/*", "spiffe://example.org/payments"}, "no registered identity falls under spiffe://example.org/ns/dev/* (the caller)"},
		{"a grant from a prefix something is under", []string{"grant", "spiffe://example.org/*", "spiffe://example.org/payments"}, ""},
		{"an entry on an agent that never attested", []string{"entry", "create", "--spiffe-id", "spiffe://example.org/a", "--selector", "unix:uid:1", "--parent", "spiffe://example.org/kith/agent/join_token/ghost"}, "no agent spiffe://example.org/kith/agent/join_token/ghost has attested"},
		{"an entry with a selector no workload attestor gives", []string{"entry", "create", "--spiffe-id", "spiffe://example.org/b", "--selector", "join_token:name:n1", "--node-selector", "join_token:name:n1"}, "selector join_token:name:n1: no workload attestor of this Kith gives join_token selectors (it has k8s, unix)"},
		{"an entry placed by a node selector no node attestor gives", []string{"entry", "create", "--spiffe-id", "spiffe://example.org/c", "--selector", "unix:uid:1", "--node-selector", "unix:uid:0"}, "node selector unix:uid:0: no node attestor of this Kith gives unix selectors (it has join_token, k8s_psat)"},
		{"an entry of pods placed by their cluster's agents", []string{"entry", "create", "--spiffe-id", "spiffe://example.org/d", "--selector", "k8s:ns:default", "--node-selector", "k8s_psat:cluster:prod"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errs, code := s.kith(t, tt.args...)
			if tt.warn == "" {
				if code != 0 || strings.Contains(errs, "warning") {
					t.Errorf("exit %d, stderr %q; want no warning", code, errs)
				}
				return
			}
			if code != 0 || !strings.Contains(errs, "kith: warning: "+tt.warn) {
				t.Errorf("exit %d, stderr %q; want exit 0 and the warning %q", code, errs, tt.warn)
			}
			strict := append(slices.Clone(tt.args), "--strict")
			if len(tt.args) > 1 && tt.args[0] == "entry" { // a second entry of the same ID would be a duplicate
				strict = slices.Clone(tt.args)
				strict[3] += "-strict"
				strict = append(strict, "--strict")
			}
			before := s.ok(t, "audit", "list", "-o", "json")
			if _, errs, code := s.kith(t, strict...); code == 0 || !strings.Contains(errs, tt.warn) || !strings.Contains(errs, "refused: --strict") {
				t.Errorf("with --strict: exit %d, stderr %q; want it refused", code, errs)
			}
			if after := s.ok(t, "audit", "list", "-o", "json"); after != before {
				t.Errorf("--strict refused but something changed")
			}
		})
	}
}

func TestShellCompletionOffersIDsFromTheServer(t *testing.T) {
	s := startServer(t, t.TempDir())
	s.ok(t, "entry", "create", "--spiffe-id", "spiffe://example.org/ns/prod/payments", "--selector", "unix:uid:1001", "--node-selector", "join_token:name:n1")
	s.ok(t, "entry", "create", "--spiffe-id", "spiffe://example.org/ns/prod/frontend", "--selector", "unix:uid:1002", "--node-selector", "join_token:name:n1")
	var g struct{ Id string }
	if err := json.Unmarshal([]byte(s.ok(t, "grant", "frontend", "payments", "-o", "json")), &g); err != nil {
		t.Fatal(err)
	}
	complete := func(args ...string) []string {
		out := s.ok(t, append([]string{"__complete"}, args...)...)
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if !strings.HasPrefix(l, ":") && !strings.HasPrefix(l, "Completion ended") {
				got = append(got, l)
			}
		}
		return got
	}
	if got := complete("grant", "pay"); !slices.Equal(got, []string{"payments"}) {
		t.Errorf("kith grant pay<TAB> = %q, want payments", got)
	}
	if got := complete("can", "frontend", "spiffe://example.org/ns/prod/p"); !slices.Equal(got, []string{"spiffe://example.org/ns/prod/payments"}) {
		t.Errorf("kith can frontend spiffe://…/p<TAB> = %q", got)
	}
	if got := complete("revoke", "g-"); !slices.Equal(got, []string{g.Id}) {
		t.Errorf("kith revoke g-<TAB> = %q, want %s", got, g.Id)
	}
	if got := complete("agents", "evict", ""); len(got) != 0 {
		t.Errorf("kith agents evict <TAB> with no agents = %q", got)
	}
}

func TestARelativeAdminSocketWorks(t *testing.T) {
	s := startServer(t, t.TempDir())
	t.Chdir(filepath.Dir(s.socket))
	rel := filepath.Base(s.socket)
	var out, errb bytes.Buffer
	code := MainEnv(context.Background(), []string{"token", "list", "--admin-socket", rel}, &out, &errb, func(string) string { return "" })
	if code != 0 {
		t.Errorf("--admin-socket %s: exit %d, %s", rel, code, errb.String())
	}
	code = MainEnv(context.Background(), []string{"token", "list"}, &out, &errb, func(k string) string {
		if k == "KITH_ADMIN_SOCKET" {
			return "./" + rel
		}
		return ""
	})
	if code != 0 {
		t.Errorf("KITH_ADMIN_SOCKET=./%s: exit %d, %s", rel, code, errb.String())
	}
}

func TestAnOpenDataDirIsTightened(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil { // past the umask
		t.Fatal(err)
	}
	startServer(t, dir)
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode after start: %v (%v), want 0700", fi.Mode().Perm(), err)
	}
}
