// Command policy measures how long a policy commit takes to be enforced everywhere: it generates a policy
// repository with the git command (-modules service modules, each with its tests, plus data.json), starts
// the real `kith server` following it (policy.git with a webhook secret and a one-hour poll interval, so only
// the webhook triggers a sync) and -agents `kith agent`s as child processes. For each of -commits commits it
// changes one module so that the policy's x-policy-serial header carries the commit number, commits, POSTs
// the webhook signed like GitHub (X-Hub-Signature-256), and asks every agent's ext_authz socket
// (envoy.service.auth.v3.Authorization/Check) until all of them answer with the new serial.
//
// The server's phases (fetch, compile + test, validate + sign, store) come from its log, and the time each
// agent logged the bundle as active.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kithid/kith/bench/internal/kithenv"
	"github.com/kithid/kith/bench/internal/latency"
)

func main() {
	var o options
	flag.StringVar(&o.bin, "kith", "bin/kith", "kith binary")
	flag.IntVar(&o.commits, "commits", 20, "commits to push, one at a time")
	flag.IntVar(&o.modules, "modules", 200, "service modules in the generated repository (each with a test file)")
	flag.IntVar(&o.agents, "agents", 3, "agents enforcing the policy")
	flag.DurationVar(&o.poll, "poll", 10*time.Millisecond, "how often each agent is asked while a commit rolls out")
	flag.DurationVar(&o.gap, "gap", time.Second, "pause between one commit being enforced everywhere and the next commit")
	flag.BoolVar(&o.verbose, "v", false, "print every commit")
	flag.StringVar(&o.logs, "logs", "", "copy the server's and agents' logs into this directory at the end")
	flag.Parse()
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "policy:", err)
		os.Exit(1)
	}
}

type options struct {
	bin                      string
	commits, modules, agents int
	poll, gap                time.Duration
	verbose                  bool
	logs                     string
}

// rollout is what one commit took.
type rollout struct {
	serial  int
	sha     string
	webhook time.Time       // just before the webhook request
	agents  []time.Duration // webhook → that agent's Check answers with the new serial
}

func (r rollout) all() time.Duration { return slices.Max(r.agents) }

func run(ctx context.Context, o options) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	repoDir, err := os.MkdirTemp("", "kith-bench-policy-repo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(repoDir)
	t := time.Now()
	repo, first, err := newPolicyRepo(repoDir, o.modules)
	if err != nil {
		return err
	}
	fmt.Printf("policy: generated %d service modules + %d test files + ext.rego + data.json in %v\n",
		o.modules, o.modules, time.Since(t).Round(time.Millisecond))

	secret := rand.Text()
	c, err := kithenv.StartCluster(ctx, kithenv.ClusterOptions{Bin: o.bin, Agents: o.agents, LogLevel: "info", LogFormat: "json",
		ServerEnv: []string{"KITH_POLICY_GIT_URL=" + repoDir, "KITH_POLICY_GIT_REF=main", "KITH_POLICY_GIT_PATH=policy",
			"KITH_POLICY_GIT_POLL_INTERVAL=1h", "KITH_POLICY_GIT_WEBHOOK_SECRET=" + secret}})
	if err != nil {
		return err
	}
	defer c.Close()
	if o.logs != "" {
		defer copyLogs(c, o.logs)
	}

	probes := make([]*probe, len(c.Agents))
	for i, a := range c.Agents {
		if probes[i], err = dialProbe(a.AuthzSocket); err != nil {
			return err
		}
		defer probes[i].Close()
	}
	// The server syncs when it starts; wait until every agent enforces that first commit.
	t = time.Now()
	if _, err := waitAll(ctx, probes, serviceID(0), "0", o.poll, 2*time.Minute); err != nil {
		return fmt.Errorf("first commit %s: %w\nserver log:\n%s", first[:12], err, tail(c.ServerLog, 4096))
	}
	fmt.Printf("policy: first commit (the server syncs it when it starts) enforced by %d agents %v after they came up\n", len(probes), time.Since(t).Round(time.Millisecond))

	pids := []int{c.Server.Process.Pid}
	for _, a := range c.Agents {
		pids = append(pids, a.Cmd.Process.Pid)
	}
	cpuBefore, err := cpuTimes(pids)
	if err != nil {
		return err
	}
	hook := webhook{url: "http://" + c.HTTPAddr + "/v1/policy/webhook", secret: secret}
	var rolls []rollout
	var commitTimes []time.Duration
	for n := 1; n <= o.commits; n++ {
		time.Sleep(o.gap) // let the previous rollout settle (status reports, state saves, GC)
		t := time.Now()
		sha, target, err := repo.bump(n)
		if err != nil {
			return err
		}
		commitTimes = append(commitTimes, time.Since(t))
		r := rollout{serial: n, sha: sha, webhook: time.Now()}
		if err := hook.push(ctx, sha); err != nil {
			return err
		}
		if r.agents, err = waitAll(ctx, probes, target, strconv.Itoa(n), o.poll, time.Minute); err != nil {
			return fmt.Errorf("commit %d (%s): %w\nserver log:\n%s", n, sha[:12], err, tail(c.ServerLog, 4096))
		}
		if o.verbose {
			fmt.Printf("  commit %2d %s: all agents %v %v\n", n, sha[:12], r.all().Round(time.Millisecond), r.agents)
		}
		rolls = append(rolls, r)
	}

	lat := make([]time.Duration, len(rolls))
	for i, r := range rolls {
		lat[i] = r.all()
	}
	fmt.Printf("policy: %d commits, %d modules + %d tests, %d agents: commit pushed + webhook → every agent enforces it: %s\n",
		len(rolls), o.modules+1, o.modules+1, len(probes), latency.Summarize(lat))
	fmt.Printf("policy: (git commit itself, not included: %s)\n", latency.Summarize(commitTimes))
	cpuAfter, err := cpuTimes(pids)
	if err != nil {
		return err
	}
	fmt.Printf("policy: CPU per commit (user+system): server %v", ((cpuAfter[0] - cpuBefore[0]) / time.Duration(len(rolls))).Round(time.Millisecond))
	for i := 1; i < len(pids); i++ {
		fmt.Printf(", agent %d %v", i-1, ((cpuAfter[i] - cpuBefore[i]) / time.Duration(len(rolls))).Round(time.Millisecond))
	}
	fmt.Println()
	return printPhases(c, rolls)
}

// printPhases reads the server's and the agents' logs for each commit's phases.
func printPhases(c *kithenv.Cluster, rolls []rollout) error {
	applied, err := readLog(c.ServerLog, "policy commit applied")
	if err != nil {
		return err
	}
	built, err := readLog(c.ServerLog, "policy bundle built")
	if err != nil {
		return err
	}
	if len(applied) == 0 || len(built) == 0 {
		fmt.Println("policy: the server logs no phase timings (a kith older than this benchmark)")
		return nil
	}
	activated := make([]map[string]logLine, len(c.Agents))
	for i, a := range c.Agents {
		if activated[i], err = readLog(a.Log, "policy activated"); err != nil {
			return err
		}
	}
	phases := map[string][]time.Duration{}
	order := []string{"webhook → server picks it up", "fetch (ls-remote + clone)", "read + compile + test", "validate + sign",
		"store", "server done → last agent active", "last agent active → last Check sees it"}
	for _, r := range rolls {
		a, ok1 := applied[r.sha]
		b, ok2 := built[r.sha]
		if !ok1 || !ok2 {
			return fmt.Errorf("commit %s: no phase lines in %s", r.sha[:12], c.ServerLog)
		}
		fetch, test, apply := a.duration("fetch"), a.duration("test"), a.duration("apply")
		done := a.Time
		started := done.Add(-fetch - test - apply)
		phases[order[0]] = append(phases[order[0]], started.Sub(r.webhook))
		phases[order[1]] = append(phases[order[1]], fetch)
		phases[order[2]] = append(phases[order[2]], test)
		phases[order[3]] = append(phases[order[3]], b.duration("compile_sign"))
		phases[order[4]] = append(phases[order[4]], b.duration("store"))
		var last time.Time
		for i := range c.Agents {
			l, ok := activated[i][r.sha]
			if !ok {
				return fmt.Errorf("commit %s: agent %s did not log its activation", r.sha[:12], c.Agents[i].Name)
			}
			if l.Time.After(last) {
				last = l.Time
			}
		}
		phases[order[5]] = append(phases[order[5]], last.Sub(done))
		phases[order[6]] = append(phases[order[6]], r.webhook.Add(r.all()).Sub(last))
	}
	fmt.Println("policy: phases per commit (server and agent logs, millisecond timestamps):")
	for _, name := range order {
		fmt.Printf("  %-40s %s\n", name, latency.Summarize(phases[name]))
	}
	return nil
}

// logLine is a JSON log record with the fields printPhases reads.
type logLine struct {
	Time     time.Time      `json:"time"`
	Msg      string         `json:"msg"`
	Commit   string         `json:"commit"`
	Revision string         `json:"revision"`
	Attrs    map[string]any `json:"-"`
}

func (l logLine) duration(key string) time.Duration {
	n, _ := l.Attrs[key].(float64) // slog's JSON handler writes a time.Duration as nanoseconds
	return time.Duration(n)
}

// readLog returns the records with message msg, by commit (or revision).
func readLog(path, msg string) (map[string]logLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]logLine{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.Msg != msg {
			continue
		}
		_ = json.Unmarshal(sc.Bytes(), &l.Attrs)
		key := l.Commit
		if key == "" {
			key = l.Revision
		}
		out[key] = l
	}
	return out, sc.Err()
}

// webhook posts push events signed like GitHub's.
type webhook struct {
	url, secret string
}

func (w webhook) push(ctx context.Context, sha string) error {
	body, _ := json.Marshal(map[string]string{"ref": "refs/heads/main", "after": sha})
	mac := hmac.New(sha256.New, []byte(w.secret))
	mac.Write(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("post webhook: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("post webhook: %s: %s", resp.Status, msg)
	}
	return nil
}

// probe asks one agent's ext_authz socket for the serial of the policy it enforces.
type probe struct {
	conn   *grpc.ClientConn
	client authv3.AuthorizationClient
}

func dialProbe(socket string) (*probe, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dial ext_authz %s: %w", socket, err)
	}
	return &probe{conn: conn, client: authv3.NewAuthorizationClient(conn)}, nil
}

func (p *probe) Close() error { return p.conn.Close() }

// serial returns the serial header of the answer to a health check of target ("" when denied or absent).
func (p *probe) serial(ctx context.Context, target string) (string, error) {
	resp, err := p.client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Principal: ProbeCaller},
		Destination: &authv3.AttributeContext_Peer{Principal: target},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: ProbePath, Host: "probe", Headers: map[string]string{"x-request-id": "bench"},
		}},
	}})
	if err != nil {
		return "", err
	}
	for _, h := range resp.GetOkResponse().GetHeaders() {
		if h.GetHeader().GetKey() == SerialHeader {
			return h.GetHeader().GetValue(), nil
		}
	}
	return "", nil
}

// waitAll asks every probe every poll about target until each answers want, and returns how long each took.
func waitAll(ctx context.Context, probes []*probe, target, want string, poll, timeout time.Duration) ([]time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out := make([]time.Duration, len(probes))
	errs := make([]error, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Go(func() {
			var got string
			for {
				s, err := p.serial(ctx, target)
				if err == nil && s == want {
					out[i] = time.Since(start)
					return
				}
				if err == nil {
					got = s
				}
				select {
				case <-ctx.Done():
					errs[i] = fmt.Errorf("agent %d still answers serial %q, want %q: %w", i, got, want, ctx.Err())
					return
				case <-time.After(poll):
				}
			}
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// tail returns the last n bytes of a file, for error messages.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	return string(b[max(0, len(b)-n):])
}

// copyLogs copies the cluster's logs into dir.
func copyLogs(c *kithenv.Cluster, dir string) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "policy: copy logs:", err)
		return
	}
	paths := []string{c.ServerLog}
	for _, a := range c.Agents {
		paths = append(paths, a.Log)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, filepath.Base(p)), b, 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "policy: copy logs:", err)
		}
	}
}

// cpuTimes reads the user+system CPU time of each process from /proc/PID/stat.
func cpuTimes(pids []int) ([]time.Duration, error) {
	out := make([]time.Duration, len(pids))
	for i, pid := range pids {
		raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return nil, err
		}
		// Fields after the command (which may hold spaces) start after the last ')'; utime and stime are
		// fields 14 and 15, in clock ticks (100 per second on Linux).
		f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
		if len(f) < 13 {
			return nil, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
		}
		ut, err1 := strconv.ParseInt(f[11], 10, 64)
		st, err2 := strconv.ParseInt(f[12], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		out[i] = time.Duration(ut+st) * 10 * time.Millisecond
	}
	return out, nil
}
