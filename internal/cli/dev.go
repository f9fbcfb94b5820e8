package cli

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/attestation/node"
	"github.com/kithid/kith/attestation/node/jointoken"
	"github.com/kithid/kith/internal/agent/state"
	"github.com/kithid/kith/internal/config"
	"github.com/kithid/kith/internal/server"
	"github.com/kithid/kith/internal/store"
)

func init() {
	extraCommands = append(extraCommands, (*env).devCommand)
}

// devAgentToken names the join token of the dev agent; its SPIFFE ID follows from it.
const devAgentToken = "dev"

func (e *env) devCommand() *cobra.Command {
	var dir, td, grpcAddr, httpAddr, logLevel, policyDir, decision, policyRepo, policyRef, policyPath, adminListen, serverConfig string
	var reinit bool
	cmd := &cobra.Command{
		Use:   "dev [--data-dir DIR] [--trust-domain kith.test]",
		Short: "Run a server and an agent in one process on an embedded store: the one-command way to try Kith",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				d, err := os.MkdirTemp("", "kith-dev-")
				if err != nil {
					return err
				}
				// A temp dir of our own holds throwaway CA keys: it goes when kith dev ends, started or not.
				defer os.RemoveAll(d)
				dir = d
			}
			abs, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			dir = abs
			if !cmd.Flags().Changed("policy-path") {
				policyPath = e.getenv("KITH_POLICY_GIT_PATH") // as the server's policy.git.path
			}
			return e.runDev(cmd.Context(), devOptions{dir: dir, td: td, grpcAddr: grpcAddr, httpAddr: httpAddr, logLevel: logLevel, policyDir: policyDir, decision: decision,
				policyRepo: policyRepo, policyRef: policyRef, policyPath: policyPath, reinit: reinit, adminListen: adminListen,
				serverConfig: serverConfig, tdSet: cmd.Flags().Changed("trust-domain")})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&dir, "data-dir", "", "directory for the store, keys and sockets, kept after exit (default: a new temp dir, removed on exit)")
	fl.StringVar(&td, "trust-domain", "kith.test", "trust domain")
	fl.StringVar(&grpcAddr, "grpc", "127.0.0.1:0", "server agent API address")
	fl.StringVar(&httpAddr, "http", "127.0.0.1:8080", "server HTTP address (health, metrics, JWKS); :0 picks a free port")
	fl.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fl.StringVar(&policyDir, "policy-dir", "", "directory of custom Rego policy (package kith.ext) enforced by the agent")
	fl.StringVar(&policyRepo, "policy-repo", "", "Git URL or local path of a policy repository to follow (see docs/policy-git.md)")
	fl.StringVar(&policyRef, "policy-ref", "", "branch, tag or commit of --policy-repo (default: the remote's HEAD)")
	fl.StringVar(&policyPath, "policy-path", "", "sub-directory of --policy-repo holding the policy and its data file (default: $KITH_POLICY_GIT_PATH, else the repository root)")
	fl.BoolVar(&reinit, "reinit", false, "as kith server --reinit: start over with a new CA when --data-dir's database is missing or empty (the old files are kept aside)")
	fl.StringVar(&adminListen, "admin-listen", "", "also serve the admin API over mTLS here, for users who log in (kith login; docs/users.md), e.g. 127.0.0.1:8443")
	fl.StringVar(&decision, "authz-decision", "", "use this OPA-Envoy-style decision from the custom policy, e.g. envoy/authz/allow")
	fl.StringVar(&serverConfig, "server-config", "", "start the server from this kith server config file (e.g. its ca.upstream); kith dev's own flags still set the data dir, listeners and log level")
	return cmd
}

// devOptions are kith dev's flags.
type devOptions struct {
	dir, td, grpcAddr, httpAddr, logLevel, policyDir, decision string
	policyRepo, policyRef, policyPath, adminListen             string
	serverConfig                                               string
	reinit, tdSet                                              bool
}

func (e *env) runDev(ctx context.Context, o devOptions) error {
	dir, td, grpcAddr, httpAddr, logLevel := o.dir, o.td, o.grpcAddr, o.httpAddr, o.logLevel
	// DIR stays traversable so workloads of any user reach the sockets; what is inside stays private.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create --data-dir: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	trustDomain, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		return fmt.Errorf("--trust-domain %q: %w", td, err)
	}
	var devAgentID spiffeid.ID
	scfg := &config.Server{}
	if o.serverConfig != "" {
		// The file alone: kith dev does not take the server's KITH_* environment.
		if scfg, err = config.LoadServer(o.serverConfig, func(string) (string, bool) { return "", false }); err != nil {
			return fmt.Errorf("--server-config: %w", err)
		}
	}
	if o.tdSet || scfg.TrustDomain == "" {
		scfg.TrustDomain = td
	} else if trustDomain, err = spiffeid.TrustDomainFromString(scfg.TrustDomain); err != nil {
		return fmt.Errorf("--server-config: trust_domain %q: %w", scfg.TrustDomain, err)
	}
	if devAgentID, err = node.AgentID(trustDomain, jointoken.Type, devAgentToken); err != nil {
		return err
	}
	td = trustDomain.Name()
	scfg.DataDir = filepath.Join(dir, "server")
	scfg.Listen.GRPC, scfg.Listen.HTTP, scfg.Listen.AdminSocket = grpcAddr, httpAddr, filepath.Join(dir, "admin.sock")
	scfg.Log.Level = logLevel
	if o.adminListen != "" {
		scfg.Admin.Listen = o.adminListen
	}
	if o.policyDir != "" {
		scfg.Policy.Dir = o.policyDir
	}
	if o.decision != "" {
		scfg.Authz.Decision = o.decision
	}
	if o.policyRepo != "" {
		scfg.Policy.Git.URL, scfg.Policy.Git.Ref, scfg.Policy.Git.Path = o.policyRepo, o.policyRef, o.policyPath
	}
	if err := scfg.Finish(); err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	log := newLogger(e.stderr, scfg.Log)
	srv, err := server.New(ctx, server.Config{Config: scfg, Logger: log.With("process", "server"), Version: Version, DefaultParent: devAgentID, Reinit: o.reinit})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(gctx) })
	select {
	case <-srv.Ready():
	case <-gctx.Done():
		return g.Wait()
	}

	acfg := &config.Agent{
		Server: srv.GRPCAddr().String(), TrustDomain: td, DataDir: filepath.Join(dir, "agent"),
		Socket: filepath.Join(dir, "agent.sock"), AuthzSocket: filepath.Join(dir, "authz.sock"), AuthzListen: "off",
	}
	acfg.Log.Level = logLevel
	acfg.AuthzDecision = o.decision
	acfg.ActivityReportEvery = config.Duration(time.Second) // the console's identity page follows closely
	if srv.Reinitialised() {
		// The dev agent's state trusts the old CA: keep it aside and join the new one.
		state := filepath.Join(acfg.DataDir, "state.json")
		if err := os.Rename(state, state+".replaced"); err != nil && !errors.Is(err, os.ErrNotExist) {
			cancel()
			_ = g.Wait()
			return fmt.Errorf("--reinit: move the dev agent's old state aside: %w", err)
		}
	}
	mustJoin, err := devAgentMustJoin(acfg.DataDir, time.Now(), log)
	if err != nil {
		cancel()
		_ = g.Wait()
		return err
	}
	if mustJoin {
		secret, err := devJoinToken(gctx, srv, devAgentID, log)
		if err != nil {
			cancel()
			_ = g.Wait()
			return err
		}
		acfg.JoinToken = secret
		bundlePath := filepath.Join(scfg.DataDir, "bootstrap-bundle.pem")
		var roots []byte
		for _, c := range srv.CA().Bundle().X509Authorities() {
			roots = append(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		if err := os.WriteFile(bundlePath, roots, 0o600); err != nil {
			cancel()
			_ = g.Wait()
			return err
		}
		acfg.TrustBundle = bundlePath
	}
	if err := acfg.Finish(); err != nil {
		cancel()
		_ = g.Wait()
		return fmt.Errorf("invalid agent configuration: %w", err)
	}
	a, err := newAgent(acfg, log.With("process", "agent"))
	if err != nil {
		cancel()
		_ = g.Wait()
		return err
	}
	srv.AddMetrics(a.Metrics()) // one /metrics for both halves of kith dev
	g.Go(func() error { return a.Run(gctx) })
	select {
	case <-a.Ready():
		fmt.Fprintf(e.stdout, `Kith dev is running (trust domain %s, data in %s).

  export SPIFFE_ENDPOINT_SOCKET=unix://%s
  export KITH_ADMIN_SOCKET=%s

Dev agent: %s (entries created without --parent/--node-selector are served by it)
Authz:     %s
HTTP:      http://%s (/healthz, /metrics, /.well-known/jwks.json)
Console:   %s

Try:  kith entry create --spiffe-id spiffe://%s/my-app --selector unix:uid:%d
Press Ctrl-C to stop.
`, td, dir, acfg.Socket, scfg.Listen.AdminSocket, devAgentID, acfg.AuthzSocket, srv.HTTPAddr(), consoleLine(srv.ConsoleURL()), td, os.Getuid())
	case <-gctx.Done():
	}
	return plain(g.Wait())
}

// devAgentMustJoin reports whether the dev agent must join with a new token: it has no state, its state is
// corrupt, or its SVID in it is unreadable or expired. `kith dev` takes no --join-token, so it does not stop
// there as `kith agent` does: a corrupt file is moved aside as state.json.corrupt-<time> (kept, not deleted)
// and the dev agent joins again, with a log line saying so.
func devAgentMustJoin(agentDir string, now time.Time, log *slog.Logger) (bool, error) {
	st, err := state.Load(agentDir)
	switch {
	case errors.Is(err, state.ErrCorrupt):
		path := state.Path(agentDir)
		aside := path + ".corrupt-" + now.UTC().Format("20060102T150405.000Z")
		if rerr := os.Rename(path, aside); rerr != nil {
			return false, fmt.Errorf("%w; moving it aside failed: %v", err, rerr)
		}
		log.Warn("dev agent state is corrupt; moved it aside, joining again", "path", aside, "error", err)
		return true, nil
	case err != nil:
		return false, err
	case st == nil:
		return true, nil
	}
	svid, err := st.AgentSVID.Decode()
	if err != nil || !now.Before(svid.Certificates[0].NotAfter) {
		return true, nil // the agent logs which, and attests with the token
	}
	return false, nil
}

// devJoinToken creates the dev agent's join token in-process. When the dev agent joined this --data-dir
// before (its state is gone, corrupt or expired), the name "dev" is taken: the old dev agent is evicted
// (and an unused dev token revoked) so that it joins again under the same SPIFFE ID.
func devJoinToken(ctx context.Context, srv *server.Server, agentID spiffeid.ID, log *slog.Logger) (string, error) {
	req := &adminv1.CreateJoinTokenRequest{Name: devAgentToken, TtlSeconds: 600}
	resp, err := srv.Admin().CreateJoinToken(ctx, req)
	if errors.Is(err, store.ErrAlreadyExists) {
		log.Warn("the dev agent joined this --data-dir before but its state is gone or expired; evicting it and joining again", "agent_id", agentID.String())
		if err := freeDevTokenName(ctx, srv, agentID); err != nil {
			return "", err
		}
		resp, err = srv.Admin().CreateJoinToken(ctx, req)
	}
	if err != nil {
		return "", fmt.Errorf("create the dev agent's join token: %w", err)
	}
	return resp.GetSecret(), nil
}

// freeDevTokenName evicts the dev agent and revokes any unused dev token, so the name "dev" is free again.
func freeDevTokenName(ctx context.Context, srv *server.Server, agentID spiffeid.ID) error {
	admin := srv.Admin()
	if _, err := admin.EvictAgent(ctx, &adminv1.EvictAgentRequest{Id: agentID.String()}); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("evict the old dev agent: %w", err)
	}
	tokens, err := admin.ListJoinTokens(ctx, &adminv1.ListJoinTokensRequest{})
	if err != nil {
		return fmt.Errorf("list join tokens: %w", err)
	}
	for _, t := range tokens.GetTokens() {
		if t.GetName() == devAgentToken && t.GetUsedAt() == nil {
			if _, err := admin.RevokeJoinToken(ctx, &adminv1.RevokeJoinTokenRequest{Id: t.GetId()}); err != nil {
				return fmt.Errorf("revoke the unused dev join token %s: %w", t.GetId(), err)
			}
		}
	}
	return nil
}

// consoleLine is what kith dev prints for the web console.
func consoleLine(url string) string {
	if url == "" {
		return "off (--http is not a loopback address; see ui.enabled in docs/configuration.md)"
	}
	return url
}
