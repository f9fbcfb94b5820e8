// Command grant measures how long a grant made with the CLI takes to be enforced by the agent: the real
// `kith server` and `kith agent` run as child processes, with a caller and a target entry registered under
// the agent. Each trial runs `kith grant CALLER TARGET` and, from the moment the command returns, polls the
// agent's Envoy ext_authz socket with a Check for CALLER → TARGET until it is allowed; then runs
// `kith revoke CALLER TARGET` and polls until it is denied again. Every trial is a new grant (the previous one
// is revoked), so each measures a full server → agent propagation. The same trials are then run through the
// admin API directly (CreateGrant, RevokeGrants), which leaves out the CLI's own start and exit.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/bench/internal/kithenv"
	"github.com/kithid/kith/bench/internal/latency"
)

func main() {
	bin := flag.String("kith", "bin/kith", "kith binary (server, agent and the CLI)")
	trials := flag.Int("trials", 200, "grants to make and revoke, one at a time")
	poll := flag.Duration("poll", time.Millisecond, "pause between two ext_authz checks while waiting")
	timeout := flag.Duration("timeout", 10*time.Second, "give up on a trial after this long")
	flag.Parse()
	if err := run(*bin, *trials, *poll, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "grant:", err)
		os.Exit(1)
	}
}

const (
	caller = "spiffe://" + kithenv.TrustDomain + "/bench/grant/frontend"
	target = "spiffe://" + kithenv.TrustDomain + "/bench/grant/payments"
)

// results are the durations of each trial's four steps: the grant call, until allowed, the revoke call,
// until denied.
type results struct {
	grantCall, granted, revokeCall, revoked []time.Duration
	// firstGranted and firstRevoked count the trials whose first check after the call returned already
	// gave the new answer: the agent had the change before the call (for the CLI: its process) was done.
	firstGranted, firstRevoked int
	polls                      int
}

func run(bin string, trials int, poll, timeout time.Duration) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	p, err := kithenv.StartProcesses(ctx, kithenv.Options{Bin: bin})
	if err != nil {
		return err
	}
	defer p.Close()
	uid := "unix:uid:" + strconv.Itoa(os.Getuid())
	for i, id := range []string{caller, target} {
		// Distinct selectors: the target is served by the bench agent (the server sends an agent only the
		// grants for targets it serves); the caller is registered as a real workload would be.
		if _, err := p.Admin.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: &adminv1.Entry{
			SpiffeId: id, ParentId: kithenv.AgentID.String(), Selectors: []string{uid, "unix:gid:" + strconv.Itoa(1000+i)},
		}}); err != nil {
			return fmt.Errorf("create entry %s: %w", id, err)
		}
	}
	if err := p.WaitAuthz(ctx); err != nil {
		return err
	}
	conn, err := grpc.NewClient("unix://"+p.AuthzSocket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	c := &checker{client: authv3.NewAuthorizationClient(conn), poll: poll}

	// Warm up, unrecorded: the first grant also waits for the target entry to reach the agent.
	if _, err := c.until(ctx, code.Code_PERMISSION_DENIED, 30*time.Second); err != nil {
		return fmt.Errorf("before the first grant: %w", err)
	}
	cli := &cli{bin: bin, adminSocket: p.AdminSocket}
	if err := trial(ctx, cli, c, 30*time.Second, &results{}); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	for _, g := range []granter{cli, &api{admin: p.Admin}} {
		c.polls = 0
		var r results
		for i := range trials {
			if err := trial(ctx, g, c, timeout, &r); err != nil {
				return fmt.Errorf("%s trial %d: %w", g.name(), i+1, err)
			}
			time.Sleep(5 * time.Millisecond) // let the agent settle, so trials are independent
		}
		r.polls = c.polls
		report(g.name(), r, trials, poll)
	}
	return nil
}

// granter grants CALLER → TARGET and revokes it, returning how long each call took.
type granter interface {
	name() string
	grant(ctx context.Context) (time.Duration, error)
	revoke(ctx context.Context) (time.Duration, error)
}

// trial grants, waits for the allow, revokes and waits for the denial, appending the durations to r.
func trial(ctx context.Context, g granter, c *checker, timeout time.Duration, r *results) error {
	took, err := g.grant(ctx)
	if err != nil {
		return err
	}
	polls := c.polls
	granted, err := c.until(ctx, code.Code_OK, timeout)
	if err != nil {
		return fmt.Errorf("after the grant: %w", err)
	}
	r.grantCall, r.granted = append(r.grantCall, took), append(r.granted, granted)
	if c.polls == polls+1 {
		r.firstGranted++
	}

	took, err = g.revoke(ctx)
	if err != nil {
		return err
	}
	polls = c.polls
	revoked, err := c.until(ctx, code.Code_PERMISSION_DENIED, timeout)
	if err != nil {
		return fmt.Errorf("after the revoke: %w", err)
	}
	r.revokeCall, r.revoked = append(r.revokeCall, took), append(r.revoked, revoked)
	if c.polls == polls+1 {
		r.firstRevoked++
	}
	return nil
}

func report(name string, r results, trials int, poll time.Duration) {
	fmt.Printf("grant: %s grant returned → the agent's ext_authz allows, %d trials (polling every %s): %s\n", name, trials, poll, latency.Summarize(r.granted))
	fmt.Printf("grant: %s revoke returned → the agent's ext_authz denies, %d trials: %s\n", name, trials, latency.Summarize(r.revoked))
	total := make([]time.Duration, len(r.granted))
	for i := range total {
		total[i] = r.grantCall[i] + r.granted[i]
	}
	fmt.Printf("grant: %s grant called → the agent's ext_authz allows: %s\n", name, latency.Summarize(total))
	fmt.Printf("grant: %s grant call itself: %s\n", name, latency.Summarize(r.grantCall))
	fmt.Printf("grant: %s revoke call itself: %s\n", name, latency.Summarize(r.revokeCall))
	fmt.Printf("grant: %s: %d ext_authz checks made while waiting; the first check after the call returned already had the new answer in %d of %d grants and %d of %d revokes\n",
		name, r.polls, r.firstGranted, trials, r.firstRevoked, trials)
}

// cli runs the kith CLI against the server's admin socket: the figure the target is about.
type cli struct {
	bin, adminSocket string
}

func (c *cli) name() string { return "`kith`" }

func (c *cli) grant(ctx context.Context) (time.Duration, error) {
	return c.run(ctx, "grant", caller, target, "--reason", "bench/grant")
}

func (c *cli) revoke(ctx context.Context) (time.Duration, error) {
	return c.run(ctx, "revoke", caller, target)
}

// run runs `kith ARGS...` and returns how long it took from exec to exit.
func (c *cli) run(ctx context.Context, args ...string) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, c.bin, append([]string{"--admin-socket", c.adminSocket}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("kith %v: %w\n%s", args, err, out.Bytes())
	}
	return took, nil
}

// api calls the admin API over the admin socket, as the CLI does, from this process.
type api struct {
	admin adminv1.AdminServiceClient
}

func (a *api) name() string { return "admin API" }

func (a *api) grant(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	_, err := a.admin.CreateGrant(ctx, &adminv1.CreateGrantRequest{Grant: &adminv1.Grant{Caller: caller, Target: target, Reason: "bench/grant"}})
	return time.Since(start), err
}

func (a *api) revoke(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	_, err := a.admin.RevokeGrants(ctx, &adminv1.RevokeGrantsRequest{Caller: caller, Target: target})
	return time.Since(start), err
}

// checker asks the agent's ext_authz whether caller may call target, as Envoy would.
type checker struct {
	client authv3.AuthorizationClient
	poll   time.Duration
	polls  int
}

var request = &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
	Source:      &authv3.AttributeContext_Peer{Principal: caller, Address: &corev3.Address{}},
	Destination: &authv3.AttributeContext_Peer{Principal: target},
	Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
		Method: "GET", Path: "/api/orders", Headers: map[string]string{":method": "GET", ":path": "/api/orders"},
	}},
}}

// until checks until the answer's gRPC code is want and returns how long that took from the call.
func (c *checker) until(ctx context.Context, want code.Code, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	var last error
	for time.Since(start) < timeout {
		c.polls++
		resp, err := c.client.Check(ctx, request)
		if err == nil && code.Code(resp.GetStatus().GetCode()) == want {
			return time.Since(start), nil
		}
		if err != nil {
			last = err
		}
		time.Sleep(c.poll)
	}
	return 0, errors.Join(fmt.Errorf("the check did not become %v within %s", want, timeout), last)
}
