// Package agent is the Kith node agent: it attests its node to the server, keeps a pushed copy of the
// entries it serves, holds an X.509-SVID for each (keys made here, never sent), rotates them, and serves
// them to attested workloads over the SPIFFE Workload API and Envoy SDS on a unix socket.
package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/peer"
	"github.com/kithid/kith/attestation/workload"
	_ "github.com/kithid/kith/attestation/workload/unix" // the default workload attestor registers itself
	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/extauthz"
	"github.com/kithid/kith/internal/agent/workloadapi"
	"github.com/kithid/kith/internal/config"
	"github.com/kithid/kith/internal/unixsock"
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
	cfg       Config
	log       *slog.Logger
	td        spiffeid.TrustDomain
	cache     *cache.Cache
	attestor  workload.Attestor
	agentSVID atomic.Pointer[x509svid.SVID]
	jwt       *jwtCache

	dirty   chan struct{}
	signal  chan struct{} // asks the SVID manager to look again
	ready   chan struct{}
	readyMu sync.Once

	services []func(grpc.ServiceRegistrar)

	renewMu     sync.Mutex
	renewSerial string
	renewAt     time.Time
	metrics     *metrics

	engine       *authz.Engine
	authzSrv     *extauthz.Server
	verifyBundle func([]byte) (string, map[string]string, error)
	authzMu      sync.Mutex
	authzRaw     []byte // last AuthzData (proto), persisted
	policyRaw    []byte // last policy bundle, persisted
	policyRev    string
	policyKey    []byte // PEM key policy bundles must be signed with: the first one the server sent, persisted

	rejoined bool // attested again after the server refused the persisted svid

	clientMu sync.Mutex
	client   agentv1.AgentServiceClient // current mTLS client, nil while disconnected
}

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
	var td spiffeid.TrustDomain // zero: learnt from the saved state or the bootstrap bundle
	var err error
	if cfg.Config.TrustDomain != "" {
		if td, err = spiffeid.TrustDomainFromString(cfg.Config.TrustDomain); err != nil {
			return nil, fmt.Errorf("trust domain: %w", err)
		}
	}
	attestor, err := workload.New(cfg.Config.WorkloadAttestors, workload.Options{Logger: cfg.Logger.With("component", "attestor")})
	if err != nil {
		return nil, fmt.Errorf("workload_attestors: %w", err)
	}
	a := &Agent{
		cfg: cfg, log: cfg.Logger, td: td, cache: cache.New(),
		attestor: attestor,
		dirty:    make(chan struct{}, 1), signal: make(chan struct{}, 1), ready: make(chan struct{}),
	}
	a.jwt = newJWTCache(a)
	a.metrics = newMetrics(a.cache)
	if a.engine, err = authz.New(authz.Config{Now: cfg.Now, Logger: cfg.Logger.With("component", "authz"), Decision: cfg.Config.AuthzDecision}); err != nil {
		return nil, err
	}
	if a.authzSrv, err = extauthz.New(extauthz.Config{Decider: a.engine, JWT: a, Logger: cfg.Logger.With("component", "extauthz"),
		OnDecision: a.metrics.decision, SampleAllows: 100}); err != nil {
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
func (a *Agent) JWT() *jwtCache { return a.jwt }

// ID is the agent's SPIFFE ID (zero before attestation).
func (a *Agent) ID() spiffeid.ID {
	if s := a.agentSVID.Load(); s != nil {
		return s.ID
	}
	return spiffeid.ID{}
}

// Ready is closed once the agent serves its socket with a bundle.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

func (a *Agent) markDirty() {
	select {
	case a.dirty <- struct{}{}:
	default:
	}
}

func (a *Agent) poke() {
	select {
	case a.signal <- struct{}{}:
	default:
	}
}

// agentRenewAt is half-way through the agent SVID's life as counted from when the agent got it.
func (a *Agent) agentRenewAt() time.Time {
	a.renewMu.Lock()
	defer a.renewMu.Unlock()
	svid := a.agentSVID.Load()
	serial := svid.Certificates[0].SerialNumber.Text(16)
	if a.renewSerial != serial {
		leaf := svid.Certificates[0]
		a.renewSerial, a.renewAt = serial, rotationTime(a.cfg.Now(), leaf.NotBefore, leaf.NotAfter, 0.5)
	}
	return a.renewAt
}

// Run attests (or restores persisted state), serves the sockets, and keeps in sync until ctx is done.
func (a *Agent) Run(ctx context.Context) error {
	c := a.cfg.Config
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return fmt.Errorf("create agent data dir: %w", err)
	}
	if err := os.Chmod(c.DataDir, 0o700); err != nil {
		return fmt.Errorf("agent data dir: %w", err)
	}
	if err := a.restoreOrAttest(ctx); err != nil {
		return err
	}
	lis, err := listenSocket(c.Socket)
	if err != nil {
		return fmt.Errorf("workload api socket (socket): %w", err)
	}
	// Any local process may connect: bound the streams one connection can hold (a Workload API client uses
	// a few, an Envoy one per secret; the SDS bench, 100).
	srv := grpc.NewServer(grpc.Creds(peer.TransportCredentials()), grpc.MaxConcurrentStreams(maxStreamsPerConn))
	for _, reg := range a.services {
		reg(srv)
	}
	var sdsLis net.Listener
	if c.SDSSocket != "" {
		if sdsLis, err = listenSocket(c.SDSSocket); err != nil {
			lis.Close()
			return fmt.Errorf("sds socket (sds_socket): %w", err)
		}
	}

	authzLis, err := listenAuthz(c.AuthzSocket, c.AuthzListen)
	if err != nil {
		lis.Close()
		return err
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
	if c.MetricsListen != "" {
		ml, err := net.Listen("tcp", c.MetricsListen)
		if err != nil {
			return fmt.Errorf("metrics listen %s (metrics_listen): %w", c.MetricsListen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
		if c.ProfilingEnabled {
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		}
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error { return ignoreClosed(hs.Serve(ml)) })
		g.Go(func() error { <-gctx.Done(); return hs.Close() })
	}
	g.Go(func() error { return a.syncLoop(gctx) })
	g.Go(func() error { return a.svidManager(gctx) })
	g.Go(func() error { return a.persistLoop(gctx) })
	g.Go(func() error {
		<-gctx.Done()
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); authzGRPC.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(2 * time.Second):
			srv.Stop()
			authzGRPC.Stop()
		}
		return nil
	})
	a.log.Info("kith agent started", "spiffe_id", a.ID().String(), "socket", c.Socket, "server", c.Server)
	a.readyMu.Do(func() { close(a.ready) })
	err = g.Wait()
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

// restoreOrAttest loads persisted state when the agent SVID in it is still valid, else attests.
func (a *Agent) restoreOrAttest(ctx context.Context) error {
	c := a.cfg.Config
	st, err := loadState(c.DataDir)
	if err != nil {
		return err
	}
	now := a.cfg.Now()
	if st != nil && len(st.AgentSVID.Chain) > 0 {
		svid, err := st.AgentSVID.decode()
		switch {
		case err != nil:
			a.log.Warn("persisted agent svid unreadable; attesting again", "error", err)
		case !a.td.IsZero() && svid.ID.TrustDomain() != a.td:
			return fmt.Errorf("agent state in %s belongs to trust domain %s, not %s: use another --data-dir", c.DataDir, svid.ID.TrustDomain(), a.td)
		case !now.Before(svid.Certificates[0].NotAfter):
			a.log.Warn("persisted agent svid expired; attesting again", "expired", svid.Certificates[0].NotAfter)
		default:
			a.td = svid.ID.TrustDomain()
			a.agentSVID.Store(svid)
			n, err := st.restore(a.td, a.cache, now)
			if err != nil {
				return err
			}
			a.policyKey = st.PolicyKey
			if len(st.Policy) > 0 {
				if err := a.applyPolicy(ctx, &agentv1.PolicyBundle{Revision: st.PolicyRevision, Bundle: st.Policy}); err != nil {
					a.log.Error("persisted policy refused", "error", err)
				}
			}
			if len(st.Authz) > 0 {
				var pd agentv1.AuthzData
				if err := proto.Unmarshal(st.Authz, &pd); err != nil {
					a.log.Error("persisted authorization data unreadable", "error", err)
				} else if err := a.applyAuthz(ctx, &pd); err != nil {
					a.log.Error("persisted authorization data refused", "error", err)
				}
			}
			a.log.Info("restored agent state", "spiffe_id", svid.ID.String(), "entries", len(st.entries), "svids", n, "revision", st.Revision)
			return nil
		}
	}
	if c.JoinToken == "" {
		return errors.New("agent has no valid svid and no join token: create one with `kith token create` and pass --join-token")
	}
	if err := a.bootstrapBundle(ctx); err != nil {
		return err
	}
	if err := a.attest(ctx); err != nil {
		return err
	}
	return a.save()
}

// bootstrapBundle loads the trust bundle used to authenticate the server on first contact.
func (a *Agent) bootstrapBundle(ctx context.Context) error {
	c := a.cfg.Config
	switch {
	case c.TrustBundle != "":
		data, err := os.ReadFile(c.TrustBundle)
		if err != nil {
			return fmt.Errorf("read trust bundle (trust_bundle): %w", err)
		}
		roots, err := parseRootsPEM(data)
		if err != nil {
			return fmt.Errorf("trust bundle %s: %w (get it with `kith bundle show`)", c.TrustBundle, err)
		}
		if err := a.settleTrustDomain(roots, c.TrustBundle); err != nil {
			return err
		}
		a.cache.SetBundle(spiffebundle.FromX509Authorities(a.td, roots))
	case c.TrustBundleURL != "":
		if !c.InsecureBootstrap {
			return errors.New("--trust-bundle-url fetches the bundle without authenticating the server: add --insecure-bootstrap to accept that, or use --trust-bundle FILE")
		}
		a.log.Warn("insecure bootstrap: trusting the bundle fetched from the server without verifying it", "url", c.TrustBundleURL)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.TrustBundleURL, nil)
		if err != nil {
			return fmt.Errorf("trust bundle url: %w", err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("fetch trust bundle: %w", err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil || resp.StatusCode != http.StatusOK {
			return fmt.Errorf("fetch trust bundle from %s: status %s %v", c.TrustBundleURL, resp.Status, err)
		}
		// The document does not name its trust domain: read the authorities first, then label them.
		b, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString("bootstrap.invalid"), body)
		if err != nil {
			return fmt.Errorf("trust bundle from %s: %w", c.TrustBundleURL, err)
		}
		if err := a.settleTrustDomain(b.X509Authorities(), c.TrustBundleURL); err != nil {
			return err
		}
		if b, err = spiffebundle.Parse(a.td, body); err != nil {
			return fmt.Errorf("trust bundle from %s: %w", c.TrustBundleURL, err)
		}
		a.cache.SetBundle(b)
	default:
		return errors.New("first start needs the server's trust bundle: pass --trust-bundle FILE (from `kith bundle show`) or --trust-bundle-url URL --insecure-bootstrap")
	}
	return nil
}

// settleTrustDomain checks the bootstrap roots (from source) against the configured trust domain, or takes
// the trust domain from them when none is configured. Kith's CA roots carry their trust domain as a
// spiffe:// URI SAN; roots from an upstream CA may name none, and then the configured (or default) one
// stands.
func (a *Agent) settleTrustDomain(roots []*x509.Certificate, source string) error {
	named, err := rootsTrustDomain(roots)
	if err != nil {
		return fmt.Errorf("trust bundle %s: %w", source, err)
	}
	switch {
	case a.td.IsZero() && named.IsZero():
		a.td = spiffeid.RequireTrustDomainFromString(config.DefaultTrustDomain)
		a.log.Info("trust domain not configured and not named by the trust bundle; using the default", "trust_domain", a.td.Name())
	case a.td.IsZero():
		a.td = named
		a.log.Info("trust domain taken from the trust bundle", "trust_domain", a.td.Name())
	case !named.IsZero() && named != a.td:
		return fmt.Errorf("trust bundle %s is for trust domain %s, but the agent is configured for %s: set --trust-domain %s (or trust_domain in the config), or use the bundle of the %s server",
			source, named.Name(), a.td.Name(), named.Name(), a.td.Name())
	}
	return nil
}

func (a *Agent) applyBundle(pb *agentv1.Bundle) error {
	b, err := spiffebundle.Parse(a.td, pb.GetSpiffeBundle())
	if err != nil {
		return fmt.Errorf("bundle from server: %w", err)
	}
	if cur := a.cache.Bundle(); cur != nil && cur.Equal(b) {
		return nil
	}
	a.cache.SetBundle(b)
	a.markDirty()
	return nil
}

func (a *Agent) save() error {
	st, err := stateHeader(a.ID(), a.agentSVID.Load(), a.cache)
	if err != nil {
		return err
	}
	entries, svids := a.cache.Entries(), a.cache.SVIDs()
	a.authzMu.Lock()
	st.Authz, st.Policy, st.PolicyRevision = a.authzRaw, a.policyRaw, a.policyRev
	st.PolicyKey = a.policyKey
	a.authzMu.Unlock()
	return saveState(a.cfg.Config.DataDir, st, entries, svids)
}

// persistLoop saves state at most once a second after changes, and once more on shutdown.
func (a *Agent) persistLoop(ctx context.Context) error {
	changed := a.cache.Changed()
	for {
		select {
		case <-ctx.Done():
			if err := a.save(); err != nil {
				a.log.Error("save agent state", "error", err)
			}
			return nil
		case <-a.dirty:
		case <-changed:
		}
		changed = a.cache.Changed()
		if err := a.save(); err != nil {
			a.log.Error("save agent state", "error", err)
		}
		// Saving re-encodes every SVID: with many, save less often (1 s, plus 1 s per 1,000 SVIDs, at most 10 s).
		t := time.NewTimer(min(time.Second+time.Duration(a.cache.SVIDCount()/1000)*time.Second, 10*time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
}

// syncLoop holds the Sync stream, reconnecting with backoff, and renews the agent SVID at half-life.
func (a *Agent) syncLoop(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := a.syncOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if status.Code(err) == codes.PermissionDenied && a.cfg.Config.JoinToken != "" && !a.rejoined {
			// Evicted (or unknown) but given a join token: attest again with it, once.
			a.rejoined = true
			a.log.Warn("server refused this agent's svid; attesting again with the configured join token", "error", err)
			if err := a.attest(ctx); err != nil {
				a.log.Error("attest again", "error", err)
			} else if err := a.save(); err != nil {
				a.log.Error("save agent state", "error", err)
			} else {
				backoff = 100 * time.Millisecond
				continue
			}
		} else if status.Code(err) == codes.PermissionDenied {
			a.log.Error("server refused this agent; it keeps serving what it has until expiry. If it was evicted, restart it with a new --join-token", "error", err)
		} else if err != nil {
			a.log.Warn("sync with server interrupted; retrying", "error", err, "retry_in", backoff)
		}
		t := time.NewTimer(backoff + rand.N(backoff/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, a.cfg.Config.RetryMax.D())
		if err == nil {
			backoff = 100 * time.Millisecond
		}
	}
	return nil
}

// syncOnce connects with the current agent SVID, streams sync messages, and returns when the stream
// breaks or the SVID must be renewed (after which the caller reconnects with the new one).
func (a *Agent) syncOnce(ctx context.Context) error {
	conn, client, err := a.dial(true)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	renewAt := a.agentRenewAt()
	if !a.cfg.Now().Before(renewAt) {
		if err := a.renew(ctx, client); err != nil {
			return err
		}
		return nil
	}
	stream, err := client.Sync(ctx, &agentv1.SyncRequest{Revision: a.cache.Revision()})
	if err != nil {
		return err
	}
	a.setClient(client)
	defer a.setClient(nil)
	go a.reportPolicy(ctx, client, "")
	a.poke()

	renewTimer := time.AfterFunc(renewAt.Sub(a.cfg.Now()), cancel)
	defer renewTimer.Stop()
	for {
		msg, err := stream.Recv()
		if err != nil {
			if ctx.Err() != nil && !a.cfg.Now().Before(renewAt) {
				return nil // time to renew: reconnect
			}
			return err
		}
		if err := a.applySync(msg); err != nil {
			a.log.Error("apply sync message", "error", err, "revision", msg.GetRevision())
		}
	}
}

func (a *Agent) setClient(c agentv1.AgentServiceClient) {
	a.clientMu.Lock()
	a.client = c
	a.clientMu.Unlock()
}

func (a *Agent) currentClient() agentv1.AgentServiceClient {
	a.clientMu.Lock()
	defer a.clientMu.Unlock()
	return a.client
}

func (a *Agent) applySync(msg *agentv1.SyncResponse) error {
	if msg.GetBundle() != nil {
		if err := a.applyBundle(msg.GetBundle()); err != nil {
			return err
		}
	}
	if msg.GetPolicy() != nil {
		errText := ""
		if err := a.applyPolicy(context.Background(), msg.GetPolicy()); err != nil {
			a.log.Error("keeping the current policy", "error", err)
			errText = err.Error()
		}
		if c := a.currentClient(); c != nil {
			go a.reportPolicy(context.Background(), c, errText)
		}
	}
	if msg.GetAuthz() != nil {
		if err := a.applyAuthz(context.Background(), msg.GetAuthz()); err != nil {
			return err
		}
	}
	entries := make([]cache.Entry, 0, len(msg.GetEntries()))
	for _, pe := range msg.GetEntries() {
		id, err := spiffeid.FromString(pe.GetSpiffeId())
		if err != nil {
			a.log.Warn("skipping entry with a bad spiffe id", "entry", pe.GetId(), "error", err)
			continue
		}
		sels, err := attestation.ParseSelectors(pe.GetSelectors())
		if err != nil {
			a.log.Warn("skipping entry with bad selectors", "entry", pe.GetId(), "error", err)
			continue
		}
		entries = append(entries, cache.Entry{
			ID: pe.GetId(), SPIFFEID: id, Selectors: sels,
			X509TTL: time.Duration(pe.GetX509TtlSeconds()) * time.Second, JWTTTL: time.Duration(pe.GetJwtTtlSeconds()) * time.Second,
			DNSNames: pe.GetDnsNames(), Labels: pe.GetLabels(), Revision: pe.GetRevision(),
		})
	}
	if msg.GetFullSnapshot() {
		a.cache.ReplaceEntries(entries, msg.GetRevision())
	} else {
		a.cache.ApplyDelta(entries, msg.GetDeletedEntryIds(), msg.GetRevision())
	}
	a.poke()
	return nil
}

// listenSocket listens on a unix socket with mode 0777 in a 0755 directory: the socket is the API,
// workload attestation is the access control.
func listenSocket(path string) (net.Listener, error) { return unixsock.Listen(path, 0o777) }

func ignoreClosed(err error) error {
	if err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, grpc.ErrServerStopped) || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// maxStreamsPerConn bounds the concurrent streams of one connection to the agent socket.
const maxStreamsPerConn = 1024
