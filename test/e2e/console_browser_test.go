//go:build e2e && browser

package e2e

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

// The console tests drive Debian's Chromium headless (KITH_CHROMIUM, set by `make test-browser` from
// scripts/components/chromium.sh) against a real `kith dev` (KITH_BIN) with fixture data made by the CLI.

const (
	frontend = "spiffe://kith.test/ns/shop/sa/frontend"
	payments = "spiffe://kith.test/ns/shop/sa/payments"
	orders   = "spiffe://kith.test/ns/shop/sa/orders"
	reports  = "spiffe://kith.test/ns/finance/sa/reports"
	stranger = "spiffe://kith.test/ns/shop/sa/stranger" // granted nothing
)

// browser is one headless Chromium tab and what it saw: every request URL, every console error.
type browser struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	requests []string
	errors   []string
}

func chromiumPath(t *testing.T) string {
	t.Helper()
	p := os.Getenv("KITH_CHROMIUM")
	if p == "" {
		t.Fatal("KITH_CHROMIUM is not set: run `make test-browser`, or KITH_CHROMIUM=$(./scripts/components/chromium.sh) go test -tags browser ./test/e2e/ (the script installs Debian's chromium package)")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("KITH_CHROMIUM: %v: install it with ./scripts/components/chromium.sh", err)
	}
	return p
}

func newBrowser(t *testing.T, width, height int) *browser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	b := &browser{t: t, ctx: ctx}
	t.Cleanup(func() { cancelC(); cancelA() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser; no timeout on this first call
		t.Fatalf("start chromium: %v", err)
	}
	if err := chromedp.Listen(ctx, func(ev any) {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch ev := ev.(type) {
		case *network.EventRequestWillBeSent:
			b.requests = append(b.requests, ev.Request.URL)
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				var args []string
				for _, a := range ev.Args {
					args = append(args, a.Description)
				}
				b.errors = append(b.errors, "console."+string(ev.Type)+": "+strings.Join(args, " "))
			}
		case *runtime.EventExceptionThrown:
			b.errors = append(b.errors, fmt.Sprintf("exception: %s at %s:%d", ev.ExceptionDetails.Text, ev.ExceptionDetails.URL, ev.ExceptionDetails.LineNumber))
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError || ev.Entry.Level == cdplog.EntryLevelWarning {
				b.errors = append(b.errors, "log: "+ev.Entry.Text+" "+ev.Entry.URL)
			}
		}
	}); err != nil {
		t.Fatalf("listen to chromium: %v", err)
	}
	if _, err := chromedp.Call(ctx, runtime.Enable, cdp.Empty{}); err != nil {
		t.Fatalf("enable runtime events: %v", err)
	}
	return b
}

func (b *browser) run(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

// eval evaluates a JavaScript expression and returns its result.
func eval[T any](b *browser, js string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		b.t.Fatalf("evaluate %.80s: %v", js, err)
	}
	return v
}

// js runs a JavaScript statement for its effect.
func (b *browser) js(src string) {
	b.t.Helper()
	eval[any](b, "(() => { "+src+" })(), null")
}

// waitJS polls a JavaScript condition until it is true or timeout passes; it returns how long it took.
func (b *browser) waitJS(what, cond string, timeout time.Duration) time.Duration {
	b.t.Helper()
	start := time.Now()
	for {
		if eval[bool](b, "!!("+cond+")") {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			b.t.Fatalf("%s: not within %s (%s)\npage text:\n%s", what, timeout, cond, eval[string](b, "document.body.innerText"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// screenshot saves the viewport as name.png in the test's artifact directory and, with
// KITH_UPDATE_SCREENSHOTS=1, in docs/ for docs/console.md.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot: %v", err)
	}
	dir := b.t.ArtifactDir()
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	if os.Getenv("KITH_UPDATE_SCREENSHOTS") == "1" {
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "console-"+name+".png"), png, 0o644); err != nil {
			b.t.Fatal(err)
		}
	}
}

func (b *browser) seen() (requests, errors []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.requests...), append([]string(nil), b.errors...)
}

// startConsole runs kith dev with fixture data and returns the console URL and the admin socket.
func startConsole(t *testing.T) (consoleURL, admin, authzSocket string) {
	t.Helper()
	dir := shortTempDir(t)
	dev := start(t, "kith dev", nil, "dev", "--data-dir", dir, "--http", freeAddr(t), "--admin-listen", freeAddr(t))
	dev.waitOutput("Press Ctrl-C to stop.", 60*time.Second)
	m := regexp.MustCompile(`Console: +(http://\S+/ui/)`).FindStringSubmatch(dev.stdout.String())
	if m == nil {
		t.Fatalf("kith dev printed no console URL:\n%s", dev.stdout.String())
	}
	admin = filepath.Join(dir, "admin.sock")
	for _, e := range []struct{ id, uid, label string }{{frontend, "1001", "tier=web"}, {payments, "1002", "tier=core"}, {orders, "1003", "tier=core"}, {reports, "1004", "tier=batch"}} {
		mustKith(t, admin, "entry", "create", "--spiffe-id", e.id, "--selector", "unix:uid:"+e.uid, "--label", e.label)
	}
	mustKith(t, admin, "grant", frontend, payments, "--method", "GET", "--method", "POST", "--path", "/api/*", "--reason", "checkout")
	mustKith(t, admin, "grant", reports, payments, "--for", "8h", "--reason", "quarter close")
	mustKith(t, admin, "grant", frontend, orders, "--reason", "order history")
	mustKith(t, admin, "target", "mode", orders, "audit")
	return m[1], admin, filepath.Join(dir, "authz.sock")
}

func TestBrowserConsole(t *testing.T) {
	consoleURL, admin, authzSocket := startConsole(t)
	b := newBrowser(t, 1280, 800)
	b.run(chromedp.Navigate(consoleURL))
	b.waitJS("the access graph draws", `document.querySelector("#graph-svg")`, 10*time.Second)

	t.Run("each page shows what a person looks for", func(t *testing.T) {
		for _, tc := range []struct {
			name, hash, ready string
			want              []string
		}{
			{"graph", "#/graph", `document.querySelector(".edge[data-caller='` + frontend + `'][data-target='` + payments + `']")`,
				[]string{"Access graph", "4 identities, 3 grants", "ns/shop", "ns/finance", "audit-mode target"}},
			{"identity", "#/identity?id=" + url.QueryEscape(payments), `document.querySelector("#callers")`,
				[]string{"Who may call it (2)", frontend, reports, "unix:uid:1002", "tier=core", "spiffe://kith.test/kith/agent/join_token/dev"}},
			{"explain", "#/explain?caller=" + url.QueryEscape(frontend) + "&target=" + url.QueryEscape(payments) + "&method=POST&path=/api/pay", `document.querySelector("#decision")`,
				[]string{"ALLOWED", "grant g-"}},
			{"agents", "#/agents", `document.querySelector("#agents")`,
				[]string{"spiffe://kith.test/kith/agent/join_token/dev", "connected", "current"}},
			{"ca", "#/ca", `document.querySelector("#authorities")`,
				[]string{"x509-root", "x509-intermediate", "Expiry timeline", "Active intermediate expires in 7d"}},
			{"policy", "#/policy", `document.querySelector("#policy-status")`,
				[]string{"Revision in force", "builtin"}},
			{"audit", "#/audit", `document.querySelector("#audit")`,
				[]string{"verified", "rows intact", "grant.create", "target.mode"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				b.t = t
				b.js(`location.hash = ` + jsString(tc.hash))
				b.waitJS(tc.name+" renders", tc.ready, 10*time.Second)
				text := eval[string](b, "document.body.innerText")
				for _, w := range tc.want {
					if !strings.Contains(text, w) {
						t.Errorf("page %s does not show %q; it shows:\n%s", tc.name, w, text)
					}
				}
				b.screenshot(tc.name)
			})
		}
	})
	b.t = t

	t.Run("an edge appears after kith grant and disappears after revoke, without reload", func(t *testing.T) {
		b.t = t
		b.js(`location.hash = "#/graph"; window.sameDocument = "yes"`)
		edge := `document.querySelector(".edge[data-caller='` + orders + `'][data-target='` + payments + `']")`
		b.waitJS("graph renders", `document.querySelector("#graph-svg")`, 5*time.Second)
		b.waitJS("no edge yet", "!"+edge, 5*time.Second)
		out := mustKith(t, admin, "grant", orders, payments, "--for", "2h")
		took := b.waitJS("the new grant's edge appears", edge, time.Second)
		t.Logf("edge drawn %s after kith grant returned", took)
		if got := eval[string](b, edge+".getAttribute('class')"); !strings.Contains(got, "timed") || !strings.Contains(got, "src-cli") {
			t.Errorf("edge class = %q, want a dashed (timed) cli edge", got)
		}
		id := regexp.MustCompile(`g-[0-9a-f]+`).FindString(out)
		mustKith(t, admin, "revoke", id)
		took = b.waitJS("the revoked grant's edge disappears", "!"+edge, time.Second)
		t.Logf("edge removed %s after kith revoke returned", took)
		if got := eval[string](b, "window.sameDocument || 'reloaded'"); got != "yes" {
			t.Errorf("the page reloaded (window.sameDocument = %q)", got)
		}
	})
	b.t = t

	t.Run("the identity page shows the SVIDs agents hold and their decisions per caller", func(t *testing.T) {
		b.t = t
		for _, call := range []struct {
			caller, path string
			want         bool
		}{{frontend, "/api/pay", true}, {frontend, "/api/pay", true}, {frontend, "/admin", false}, {stranger, "/", false}} {
			ok, err := authzAllowed(authzSocket, spiffeid.RequireFromString(call.caller), spiffeid.RequireFromString(payments), "GET", call.path)
			if err != nil || ok != call.want {
				t.Fatalf("ext_authz %s → payments GET %s: %v, %v; want %v", call.caller, call.path, ok, err, call.want)
			}
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			b.js(`location.hash = "#/identity?id=` + url.QueryEscape(payments) + `&n=` + strconv.FormatInt(time.Now().UnixNano(), 10) + `"`)
			b.waitJS("identity renders", `document.querySelector("#callers")`, 5*time.Second)
			text := eval[string](b, `document.querySelector("#decisions") ? document.querySelector("#decisions").innerText : ""`)
			if strings.Contains(text, frontend) && strings.Contains(text, stranger) {
				rows := eval[[]string](b, `[...document.querySelectorAll("#decisions tbody tr")].map(r => r.innerText.replace(/\s+/g, " ").trim())`)
				want := []string{frontend + " 2 1", stranger + " 0 1"}
				if !cmp.Equal(rows, want) {
					t.Errorf("decision rows = %q, want %q (caller, allowed, denied; most decisions first)", rows, want)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the identity page shows no decisions from the dev agent within 15s:\n%s", eval[string](b, "document.body.innerText"))
			}
			time.Sleep(300 * time.Millisecond)
		}
		svids := eval[string](b, `document.querySelector("#svids").innerText`)
		if !strings.Contains(svids, "spiffe://kith.test/kith/agent/join_token/dev") || !strings.Contains(svids, "(in ") {
			t.Errorf("SVIDs held:\n%s\nwant the dev agent's SVID of payments with its expiry", svids)
		}
		b.screenshot("identity-activity")
		b.js(`location.hash = "#/graph"`)
		b.waitJS("the graph again", `document.querySelector(".edge[data-caller='`+reports+`'][data-target='`+payments+`']")`, 5*time.Second)
	})
	b.t = t

	t.Run("clicking an edge shows the grant and its audit rows", func(t *testing.T) {
		b.t = t
		edge := `.edge[data-caller='` + reports + `'][data-target='` + payments + `']`
		b.js(`document.querySelector("` + edge + `").dispatchEvent(new MouseEvent("click", {bubbles: true}))`)
		b.waitJS("details show", `document.querySelector("#grant-detail")`, 5*time.Second)
		text := eval[string](b, `document.querySelector("#details").innerText`)
		for _, w := range []string{"quarter close", "grant.create", "in 8h"} {
			if !strings.Contains(text, w) {
				t.Errorf("details do not show %q:\n%s", w, text)
			}
		}
		if got := eval[string](b, edgeQuery(reports, payments)+".getAttribute('class')"); !strings.Contains(got, "timed") {
			t.Errorf("the time-bound grant's edge has class %q, want timed (dashed)", got)
		}
		b.js(edgeQuery(frontend, orders) + `.dispatchEvent(new MouseEvent("click", {bubbles: true}))`)
		b.waitJS("the audit-mode target's grant", `document.querySelector("#details") && document.querySelector("#details").innerText.includes("Target mode")`, 5*time.Second)
		if got := eval[string](b, `document.querySelector(".node.audit").getAttribute("data-id")`); got != orders {
			t.Errorf("the node marked audit is %q, want %s", got, orders)
		}
	})
	b.t = t

	t.Run("explain answers as kith can", func(t *testing.T) {
		b.t = t
		b.js(`location.hash = "#/explain"`)
		b.waitJS("form", `document.querySelector("#explain-caller")`, 5*time.Second)
		b.run(
			chromedp.SetValue(chromedp.CSS("#explain-caller"), orders),
			chromedp.SetValue(chromedp.CSS("#explain-target"), payments),
			chromedp.SetValue(chromedp.CSS("#explain-method"), "GET"),
			chromedp.SetValue(chromedp.CSS("#explain-path"), "/"),
			chromedp.Click(chromedp.CSS("#explain-submit")),
		)
		b.waitJS("decision", `document.querySelector("#decision") && document.querySelector("#decision").innerText.includes("DENIED")`, 5*time.Second)
		cli := kith(t, admin, "can", orders, payments, "--method", "GET", "--path", "/")
		if cli.code != 1 {
			t.Fatalf("kith can exit %d, want 1 (denied):\n%s%s", cli.code, cli.stdout, cli.stderr)
		}
		reasons := eval[[]string](b, `[...document.querySelectorAll("#reasons li")].map(l => l.innerText)`)
		if len(reasons) == 0 {
			t.Fatal("the explain page shows no reasons")
		}
		for _, r := range reasons {
			if !strings.Contains(cli.stdout, r) {
				t.Errorf("reason %q is not among kith can's:\n%s", r, cli.stdout)
			}
		}
	})
	b.t = t

	t.Run("accessibility basics", func(t *testing.T) {
		b.t = t
		for _, hash := range []string{"#/graph", "#/identity?id=" + url.QueryEscape(payments), "#/explain", "#/agents", "#/ca", "#/policy", "#/audit"} {
			b.js(`location.hash = ` + jsString(hash))
			b.waitJS(hash, `document.querySelector("main h1")`, 5*time.Second)
			time.Sleep(100 * time.Millisecond)
			res := eval[a11yResult](b, a11yJS)
			if len(res.Problems) > 0 {
				t.Errorf("%s: %d accessibility problems:\n%s", hash, len(res.Problems), strings.Join(res.Problems, "\n"))
			}
			if res.Texts < 10 || res.Controls < 7 {
				t.Errorf("%s: checked only %d texts and %d controls: is the page drawn?", hash, res.Texts, res.Controls)
			}
		}
	})
	b.t = t

	t.Run("the keyboard reaches the pages, the filters and the graph's edges", func(t *testing.T) {
		b.t = t
		b.js(`location.hash = "#/graph"`)
		b.waitJS("graph", `document.querySelector(".edge")`, 5*time.Second)
		b.js(`document.activeElement.blur(); document.body.focus()`)
		var reached []string
		for range 40 {
			b.run(chromedp.KeyEvent("\t"))
			reached = append(reached, eval[string](b, `(() => { const a = document.activeElement; return a.id || a.getAttribute("data-page") || a.getAttribute("class") || a.tagName })()`))
		}
		for _, want := range []string{"graph", "explain", "audit", "f-id", "f-source", "edge src-cli"} {
			if !containsPrefix(reached, want) {
				t.Errorf("Tab never reached %q; it reached %v", want, reached)
			}
		}
		b.run(chromedp.Focus(chromedp.CSS(`.edge[data-caller='`+frontend+`']`)), chromedp.KeyEvent("\r"))
		b.waitJS("Enter on an edge opens its details", `document.querySelector("#grant-detail")`, 5*time.Second)
	})
	b.t = t

	t.Run("a user signed in with kith console grants and revokes as themselves, under the admin policy", func(t *testing.T) {
		b.t = t
		const ledger = "spiffe://kith.test/ns/shop/sa/ledger"
		mustKith(t, admin, "entry", "create", "--spiffe-id", ledger, "--selector", "unix:uid:1005", "--label", "owner=scott")
		var added adminv1.CreateUserResponse
		kithProto(t, admin, &added, "user", "add", "scott")
		config := t.TempDir()
		mustKithUser(t, config, nil, "login", "--server", added.GetLoginUrl(), "--ca-fingerprint", added.GetCaFingerprint(), "--code", added.GetEnrolmentCode())
		if r := kith(t, admin, "console"); r.code == 0 || !strings.Contains(r.stderr, "log in first") {
			t.Errorf("kith console on the local admin socket: exit %d, %q; want a refusal saying to log in", r.code, r.stderr)
		}
		link := regexp.MustCompile(`http://\S+/ui/login\?token=\S+`).FindString(mustKithUser(t, config, nil, "console"))
		if link == "" {
			t.Fatal("kith console printed no link")
		}
		b.run(chromedp.Navigate(link))
		b.waitJS("signed in", `document.querySelector("#user") && document.querySelector("#user").innerText.includes("user/scott")`, 5*time.Second)

		b.js(`location.hash = "#/identity?id=` + url.QueryEscape(ledger) + `"`)
		b.waitJS("the grant form of an identity", `document.querySelector("#grant-caller")`, 5*time.Second)
		b.run(chromedp.SetValue(chromedp.CSS("#grant-caller"), frontend), chromedp.SetValue(chromedp.CSS("#grant-methods"), "GET"),
			chromedp.SetValue(chromedp.CSS("#grant-for"), "2h"), chromedp.SetValue(chromedp.CSS("#grant-reason"), "ledger reads"),
			chromedp.Click(chromedp.CSS(`#grant button[type=submit]`)))
		b.waitJS("the grant made", `document.querySelector("#grant-result") && document.querySelector("#grant-result").innerText.includes("Granted")`, 5*time.Second)
		b.waitJS("the new caller listed", `document.querySelector("#callers").innerText.includes("`+frontend+`")`, 5*time.Second)
		b.screenshot("signed-in-grant")
		audit := mustKith(t, admin, "audit", "list", "--limit", "20")
		if !regexp.MustCompile(`spiffe://kith.test/user/scott\s+grant.create`).MatchString(audit) {
			t.Errorf("the audit log does not name scott for the grant:\n%s", audit)
		}
		if r := kith(t, admin, "can", frontend, ledger, "--method", "GET", "--path", "/"); r.code != 0 {
			t.Errorf("kith can frontend ledger after the console's grant: exit %d\n%s", r.code, r.stdout)
		}

		// A target scott does not own: refused, saying why.
		b.js(`location.hash = "#/identity?id=` + url.QueryEscape(payments) + `"`)
		b.waitJS("the grant form of payments", `document.querySelector("#grant-caller")`, 5*time.Second)
		b.run(chromedp.SetValue(chromedp.CSS("#grant-caller"), orders), chromedp.Click(chromedp.CSS(`#grant button[type=submit]`)))
		b.waitJS("the refusal", `document.querySelector("#grant-result [role=alert]")`, 5*time.Second)
		if got := eval[string](b, `document.querySelector("#grant-result").innerText`); !strings.Contains(got, "scott may not CreateGrant") || !strings.Contains(got, "not an owner") {
			t.Errorf("refusal shown: %q", got)
		}

		// Revoke from the graph's edge details.
		b.js(`location.hash = "#/graph"`)
		edge := `.edge[data-caller='` + frontend + `'][data-target='` + ledger + `']`
		b.waitJS("the edge", `document.querySelector("`+edge+`")`, 5*time.Second)
		b.js(`document.querySelector("` + edge + `").dispatchEvent(new MouseEvent("click", {bubbles: true}))`)
		b.waitJS("the revoke button", `document.querySelector("#revoke button")`, 5*time.Second)
		b.run(chromedp.Click(chromedp.CSS("#revoke button")))
		b.waitJS("the edge gone", "!document.querySelector(\""+edge+"\")", 5*time.Second)
		if r := kith(t, admin, "can", frontend, ledger, "--method", "GET", "--path", "/"); r.code != 1 {
			t.Errorf("kith can frontend ledger after the console's revoke: exit %d, want 1 (denied)", r.code)
		}

		// Without the session's CSRF token a change is refused, even from the console's own page.
		b.js(`window.csrfTest = 0; fetch("api/grants", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({caller: "` + frontend + `", target: "` + ledger + `"})}).then(r => { window.csrfTest = r.status })`)
		b.waitJS("the answer", `window.csrfTest`, 5*time.Second)
		status := eval[float64](b, `window.csrfTest`)
		if status != 403 {
			t.Errorf("a change without the CSRF header answered %v, want 403", status)
		}
		b.js(`location.hash = "#/graph"`)
		b.waitJS("the graph again", `document.querySelector("#graph-svg")`, 5*time.Second)
	})
	b.t = t

	requests, logged := b.seen()
	var errs []string
	for _, e := range logged {
		// The refusals the signed-in subtest asks for (a target scott does not own; no CSRF header).
		if !strings.Contains(e, "status of 403 (Forbidden)") || !strings.HasSuffix(e, "/ui/api/grants") {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		t.Errorf("the console logged errors:\n%s", strings.Join(errs, "\n"))
	}
	host := strings.TrimPrefix(strings.TrimSuffix(consoleURL, "/ui/"), "http://")
	var away []string
	for _, r := range requests {
		u, err := url.Parse(r)
		if err != nil || (u.Scheme != "data" && u.Host != host) {
			away = append(away, r)
		}
	}
	if diff := cmp.Diff([]string(nil), away); diff != "" {
		t.Errorf("requests left %s (-want +got):\n%s", host, diff)
	}
	if len(requests) < 10 {
		t.Errorf("only %d requests recorded: is network tracking on? %v", len(requests), requests)
	}
}

// edgeQuery is a JavaScript expression for the graph's edge of the grant from caller to target.
func edgeQuery(caller, target string) string {
	return `document.querySelector(".edge[data-caller='` + caller + `'][data-target='` + target + `']")`
}

func containsPrefix(xs []string, p string) bool {
	for _, x := range xs {
		if strings.HasPrefix(x, p) {
			return true
		}
	}
	return false
}

func jsString(s string) string { return fmt.Sprintf("%q", s) }

// a11yResult is what a11yJS found and how much it checked.
type a11yResult struct {
	Problems []string `json:"problems"`
	Texts    int      `json:"texts"`
	Controls int      `json:"controls"`
}

// a11yJS lists accessibility problems on the page: form controls without a label, images and regions
// without a name, buttons and links without text, text whose contrast with its background is below WCAG
// AA (4.5:1, 3:1 for large text).
const a11yJS = `(() => {
  const out = [];
  let texts = 0, controls = 0;
  const name = (e) => (e.getAttribute("aria-label") || e.innerText || e.textContent || "").trim();
  for (const c of document.querySelectorAll("input, select, textarea")) {
    if (!(c.closest("label") || c.getAttribute("aria-label") || (c.id && document.querySelector("label[for='" + c.id + "']")))) out.push("unlabelled " + c.outerHTML.slice(0, 80));
  }
  for (const e of document.querySelectorAll("[role=img], svg[role], img, [role=region], nav, aside")) {
    if (e.tagName === "IMG" ? !e.getAttribute("alt") : !e.getAttribute("aria-label")) out.push("unnamed " + e.tagName + " " + (e.id || ""));
  }
  for (const e of document.querySelectorAll("button, a, [role=button], [role=link]")) {
    controls++;
    if (!name(e)) out.push("nameless " + e.outerHTML.slice(0, 80));
  }
  const rgb = (s) => (s.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); }; return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const bg = (e) => { for (; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor); if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3); } return [255, 255, 255]; };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const seen = new Set();
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const e = n.parentElement;
    if (!n.textContent.trim() || !e || seen.has(e) || e.closest("svg") || e.closest(".skip")) continue;
    seen.add(e);
    texts++;
    const st = getComputedStyle(e);
    if (st.visibility === "hidden" || st.display === "none") continue;
    const fg = rgb(st.color).slice(0, 3), b = bg(e);
    const l1 = lum(fg), l2 = lum(b);
    const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    const large = parseFloat(st.fontSize) >= 24 || (parseFloat(st.fontSize) >= 18.66 && Number(st.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) out.push("contrast " + ratio.toFixed(2) + " for " + JSON.stringify(n.textContent.trim().slice(0, 40)));
  }
  return {problems: out, texts, controls};
})()`
