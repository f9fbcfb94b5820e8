// Package agent is the Kith node agent: it attests its node to the server, keeps a pushed copy of the
// entries it serves, holds an X.509-SVID for each (keys made here, never sent), rotates them, and serves
// them to attested workloads over the SPIFFE Workload API and Envoy SDS on a unix socket.
//
// This package wires the agent's parts and runs them: syncer (the Sync stream with the server), rotation
// (workload SVIDs and the agent's own), jwtcache (JWT-SVIDs), state (the state on disk), policy (the
// authorization data and policy bundles the engine enforces) and link (the connection the unary calls
// use while the stream is up).
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/attestation/peer"
	"github.com/kithid/kith/attestation/workload"
	"github.com/kithid/kith/attestation/workload/k8s"
	_ "github.com/kithid/kith/attestation/workload/unix" // the default workload attestor registers itself
	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/extauthz"
	"github.com/kithid/kith/internal/agent/jwtcache"
	"github.com/kithid/kith/internal/agent/link"
	"github.com/kithid/kith/internal/agent/policy"
	"github.com/kithid/kith/internal/agent/rotation"
	"github.com/kithid/kith/internal/agent/state"
	"github.com/kithid/kith/internal/agent/syncer"
	"github.com/kithid/kith/internal/agent/workloadapi"
	"github.com/kithid/kith/internal/config"
	"github.com/kithid/kith/sds"
	"github.com/kithid/kith/svid/cache"
)

// Config builds an Agent.
type Config struct {
	Config *config.Agent    // required, already Finish()ed
	Logger *slog.Logger     // zero: discard
	Now    func() time.Time // zero: time.Now
}

// Agent is a running node agent.
type Agent struct {
	cfg      Config
	log      *slog.Logger
	td       spiffeid.TrustDomain // settled before Run starts its goroutines, read-only after
	cache    *cache.Cache
	attestor workload.Attestor
	svid     *rotation.AgentSVID
	rotation *rotation.Manager
	jwt      *jwtcache.Cache
	policy   *policy.Applier
	reporter *policy.Reporter
	authzRev atomic.Int64 // revision of the authorization data applied last
	persist  *state.Persister
	link     *link.Link
	servers  *servers
	sync     *syncer.Syncer
	metrics  *metrics
	activity *activity
	engine   *authz.Engine
	authzSrv *extauthz.Server

	ready   chan struct{}
	readyMu sync.Once

	services []func(grpc.ServiceRegistrar)
}

var _ workloadapi.JWTMinter = (*jwtcache.Cache)(nil)

// New prepares the agent; Run starts it.
func New(cfg Config) (*Agent, error) {
	if cfg.Config == nil {
		return nil, errors.New("agent: config is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := cfg.Config
	var td spiffeid.TrustDomain // zero: learnt from the saved state or the bootstrap bundle
	var err error
	if c.TrustDomain != "" {
		if td, err = spiffeid.TrustDomainFromString(c.TrustDomain); err != nil {
			return nil, fmt.Errorf("trust domain: %w", err)
		}
	}
	k := cfg.Config.K8s
	attestor, err := workload.New(cfg.Config.WorkloadAttestors, workload.Options{Logger: cfg.Logger.With("component", "attestor"),
		Configs: map[string]any{k8s.Name: k8s.Config{
			KubeletURL: k.KubeletURL, TokenPath: k.TokenPath, KubeletCA: k.KubeletCA, SkipKubeletVerification: k.SkipKubeletVerification,
			PollInterval: k.PollInterval.D(), MaxWait: k.MaxWait.D(), CacheTTL: k.CacheTTL.D(),
		}}})
	if err != nil {
		return nil, fmt.Errorf("workload_attestors: %w", err)
	}
	a := &Agent{
		cfg: cfg, log: cfg.Logger, td: td, cache: cache.New(),
		attestor: attestor,
		ready:    make(chan struct{}),
	}
	addrs, err := parseServers(c.Server)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	a.servers = newServers(addrs, nil)
	a.persist = state.NewPersister(state.PersisterConfig{Save: a.save, Changed: a.cache.Changed, SVIDs: a.cache.SVIDCount, Logger: cfg.Logger})
	a.svid = rotation.NewAgentSVID(rotation.AgentSVIDConfig{Bundle: bundleSource{a}, ApplyBundle: a.applyBundle,
		OnChange: a.persist.MarkDirty, Now: cfg.Now, Logger: cfg.Logger})
	if a.link, err = link.New(link.Config{Dial: func() (*grpc.ClientConn, error) { return a.dial(true) }}); err != nil {
		return nil, err
	}
	if a.rotation, err = rotation.New(rotation.Config{Cache: a.cache, Signer: a.signer, RotateAtPercent: c.RotateAtPercent,
		Now: cfg.Now, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	if a.jwt, err = jwtcache.New(jwtcache.Config{Minter: a.minter, Now: cfg.Now}); err != nil {
		return nil, err
	}
	a.metrics = newMetrics(a.cache)
	a.activity = newActivity(&a.metrics.served)
	if a.engine, err = authz.New(authz.Config{Now: cfg.Now, Logger: cfg.Logger.With("component", "authz"), Decision: c.AuthzDecision}); err != nil {
		return nil, err
	}
	if a.policy, err = policy.New(policy.Config{Engine: a.engine, OnChange: a.persist.MarkDirty, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	if a.reporter, err = policy.NewReporter(policy.ReporterConfig{Revision: a.policy.Revision, Client: a.statusClient, AuthzRevision: a.authzRev.Load, Logger: cfg.Logger,
		Activity: func() ([]*agentv1.HeldSVID, []*agentv1.DecisionCount) {
			return a.activity.heldSVIDs(a.cache), a.activity.decisions()
		},
		ActivityEvery: c.ActivityReportEvery.D()}); err != nil {
		return nil, err
	}
	sc := syncer.Config{
		Dial: a.dialSession, AgentSVID: a.svid, Revision: a.cache.Revision, Apply: a.applySync, Save: a.save,
		OnConnect: a.connected, OnDisconnect: a.link.Down, OnError: a.failover, RetryMax: c.RetryMax.D(), Now: cfg.Now, Logger: cfg.Logger,
	}
	if a.canAttest() {
		sc.Attest = a.attest
	}
	if a.sync, err = syncer.New(sc); err != nil {
		return nil, err
	}
	if a.authzSrv, err = extauthz.New(extauthz.Config{Decider: a.engine, JWT: a, Logger: cfg.Logger.With("component", "extauthz"),
		OnDecision: func(caller, target, outcome string) {
			a.metrics.decision(target, outcome)
			a.activity.decision(caller, target, outcome)
		}, SampleAllows: 100,
		Deadline: c.AuthzDeadline.D(), MaxEvaluations: c.AuthzMaxEvaluations, MaxPerCaller: c.AuthzMaxPerCaller}); err != nil {
		return nil, err
	}
	wl, err := workloadapi.New(workloadapi.Config{Attestor: a.attestor, Cache: a.cache, JWT: a.jwt, Logger: cfg.Logger.With("component", "workloadapi")})
	if err != nil {
		return nil, err
	}
	a.Register(wl.Register)
	secrets, err := sds.New(sds.Config{Attestor: a.attestor, Cache: a.cache, Logger: cfg.Logger.With("component", "sds"),
		OnNACK: a.metrics.nack})
	if err != nil {
		return nil, err
	}
	a.Register(secrets.Register)
	return a, nil
}

// Register adds a gRPC service (Workload API, SDS) to the agent socket; call it before Run.
func (a *Agent) Register(f func(grpc.ServiceRegistrar)) { a.services = append(a.services, f) }

// Cache is the agent's cache of entries, SVIDs and bundle.
func (a *Agent) Cache() *cache.Cache { return a.cache }

// Attestor is the agent's workload attestor: the configured workload_attestors, merged.
func (a *Agent) Attestor() workload.Attestor { return a.attestor }

// JWT mints (and caches) JWT-SVIDs through the server.
func (a *Agent) JWT() *jwtcache.Cache { return a.jwt }

// Engine is the agent's decision engine.
func (a *Agent) Engine() *authz.Engine { return a.engine }

// PolicyRevision is the policy revision the agent enforces.
func (a *Agent) PolicyRevision() string { return a.policy.Revision() }

// Metrics returns the agent's metrics registry.
func (a *Agent) Metrics() *prometheus.Registry { return a.metrics.reg }

// ID is the agent's SPIFFE ID (zero before attestation).
func (a *Agent) ID() spiffeid.ID { return a.svid.ID() }

// Ready is closed once the agent serves its socket with a bundle.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Run attests (or restores persisted state), serves the sockets, and keeps in sync until ctx is done.
// Every goroutine it starts is in its errgroup and ends when ctx is done; the server connection the
// unary calls share (link) is closed when they have.
func (a *Agent) Run(ctx context.Context) error {
	c := a.cfg.Config
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return fmt.Errorf("create agent data dir: %w", err)
	}
	if err := os.Chmod(c.DataDir, 0o700); err != nil {
		return fmt.Errorf("agent data dir: %w", err)
	}
	// Every listener is taken before attesting: an agent that cannot serve (another agent holds its
	// socket or port) must fail before it spends a one-time join token.
	ls, err := a.listen()
	if err != nil {
		return err
	}
	lis, sdsLis, authzLis, ml := ls.socket, ls.sds, ls.authz, ls.metrics
	if err := a.restoreOrAttest(ctx); err != nil {
		ls.close()
		return err
	}
	// Any local process may connect: bound the streams one connection can hold (a Workload API client uses
	// a few, an Envoy one per secret; the SDS bench, 100).
	srv := grpc.NewServer(grpc.Creds(peer.TransportCredentials()), grpc.MaxConcurrentStreams(maxStreamsPerConn))
	for _, reg := range a.services {
		reg(srv)
	}
	authzGRPC := grpc.NewServer()
	a.authzSrv.Register(authzGRPC)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return ignoreClosed(srv.Serve(lis)) })
	for _, l := range authzLis {
		g.Go(func() error { return ignoreClosed(authzGRPC.Serve(l)) })
	}
	if sdsLis != nil {
		g.Go(func() error { return ignoreClosed(srv.Serve(sdsLis)) })
	}
	if ml != nil {
		hs := &http.Server{Handler: a.metricsMux(c.ProfilingEnabled), ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error { return ignoreClosed(hs.Serve(ml)) })
		g.Go(func() error { <-gctx.Done(); return hs.Close() })
	}
	g.Go(func() error { return a.sync.Run(gctx) })
	g.Go(func() error { return a.rotation.Run(gctx) })
	g.Go(func() error { return a.reporter.Run(gctx) })
	g.Go(func() error { return a.persist.Run(gctx) })
	g.Go(func() error {
		<-gctx.Done()
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); authzGRPC.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(2 * time.Second):
			srv.Stop()
			authzGRPC.Stop()
			<-stopped
		}
		return nil
	})
	a.log.Info("kith agent started", "spiffe_id", a.ID().String(), "socket", c.Socket, "server", a.servers.current())
	a.readyMu.Do(func() { close(a.ready) })
	err = g.Wait()
	a.link.Close()
	os.Remove(c.Socket)
	os.Remove(c.AuthzSocket)
	if c.SDSSocket != "" {
		os.Remove(c.SDSSocket)
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// connected starts a session's unary calls: a new link, a status report, and a look at due SVIDs.
func (a *Agent) connected() {
	a.link.Up()
	a.reporter.Report("")
	a.rotation.Poke()
}

// dialSession connects the Sync stream of one session.
// failover moves the agent to the next server after a session that failed; the next session resumes there
// from the revision the agent holds.
func (a *Agent) failover(err error) {
	from := a.servers.current()
	if to := a.servers.failover(); to != from {
		a.log.Warn("server failed; moving to the next one", "from", from, "to", to, "error", err)
	}
}

func (a *Agent) dialSession() (syncer.Client, io.Closer, error) {
	conn, err := a.dial(true)
	if err != nil {
		return nil, nil, err
	}
	return agentv1.NewAgentServiceClient(conn), conn, nil
}

// signer, minter and statusClient give each part the link's client, nil while the agent is not connected.
func (a *Agent) signer() rotation.Signer {
	if c := a.link.Client(); c != nil {
		return c
	}
	return nil
}

func (a *Agent) minter() jwtcache.Minter {
	if c := a.link.Client(); c != nil {
		return c
	}
	return nil
}

func (a *Agent) statusClient() policy.StatusReporter {
	if c := a.link.Client(); c != nil {
		return c
	}
	return nil
}

func (a *Agent) save() error {
	st, err := state.Header(a.ID(), a.svid.Load(), a.cache)
	if err != nil {
		return err
	}
	entries, svids := a.cache.Entries(), a.cache.SVIDs()
	p := a.policy.Saved()
	st.Authz, st.Policy, st.PolicyRevision, st.PolicyKey = p.Authz, p.Policy, p.Revision, p.Key
	return state.Save(a.cfg.Config.DataDir, st, entries, svids)
}

// maxStreamsPerConn bounds the concurrent streams of one connection to the agent socket.
const maxStreamsPerConn = 1024

// listeners are the agent's sockets and ports, taken before it attests.
type listeners struct {
	socket, sds, metrics net.Listener // sds and metrics: nil when not configured
	authz                []net.Listener
}

func (l *listeners) close() {
	for _, x := range append([]net.Listener{l.socket, l.sds, l.metrics}, l.authz...) {
		if x != nil {
			x.Close()
		}
	}
}

// listen takes every listener the configuration names, or none: on an error those already taken are closed.
func (a *Agent) listen() (*listeners, error) {
	c := a.cfg.Config
	l := &listeners{}
	var err error
	if l.socket, err = listenSocket(c.Socket); err != nil {
		return nil, fmt.Errorf("workload api socket (socket): %w", err)
	}
	if c.SDSSocket != "" {
		if l.sds, err = listenSocket(c.SDSSocket); err != nil {
			l.close()
			return nil, fmt.Errorf("sds socket (sds_socket): %w", err)
		}
	}
	if l.authz, err = listenAuthz(c.AuthzSocket, c.AuthzListen); err != nil {
		l.close()
		return nil, err
	}
	if c.MetricsListen != "" {
		if l.metrics, err = net.Listen("tcp", c.MetricsListen); err != nil {
			l.close()
			return nil, fmt.Errorf("metrics listen %s (metrics_listen): %w", c.MetricsListen, err)
		}
	}
	return l, nil
}
