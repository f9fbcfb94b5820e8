// Package server wires the Kith server: store, CA, the admin API on a unix socket, the agent API over
// mTLS, and the HTTP endpoints for health, metrics and JWKS.
package server

import (
	"context"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/attestation/node/k8spsat"
	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/keymanager"
	"github.com/kithid/kith/internal/config"
	"github.com/kithid/kith/internal/console"
	"github.com/kithid/kith/internal/federation"
	"github.com/kithid/kith/internal/kubernetes/controllers"
	"github.com/kithid/kith/internal/policy"
	"github.com/kithid/kith/internal/server/adminapi"
	"github.com/kithid/kith/internal/server/agentapi"
	"github.com/kithid/kith/internal/server/apierr"
	"github.com/kithid/kith/internal/server/attestors"
	"github.com/kithid/kith/internal/store"
	"github.com/kithid/kith/internal/store/postgres"
	"github.com/kithid/kith/internal/store/sqlite"
	"github.com/kithid/kith/internal/unixsock"
)

// Config builds a Server.
type Config struct {
	Config  *config.Server   // required, already Finish()ed
	Logger  *slog.Logger     // zero: discard
	Now     func() time.Time // zero: time.Now
	Version string
	// DefaultParent parents entries created without a parent or node selector (kith dev).
	DefaultParent spiffeid.ID
	// Reinit starts over on an initialised data dir whose database is missing, empty or without a CA:
	// the old keys and database are moved aside, a new CA is made, and the new audit log's first rows
	// record the old root's fingerprint (kith server --reinit). Without it such a data dir is refused.
	Reinit bool
}

// The policy is what the agent and admin APIs read policy and authorization data from; agents verify its
// bundles with its key (PolicyKeySource is asserted at run time, so it is pinned here).
var (
	_ agentapi.AuthzSource     = (*policy.Policy)(nil)
	_ agentapi.PolicySource    = (*policy.Policy)(nil)
	_ agentapi.PolicyKeySource = (*policy.Policy)(nil)
	_ adminapi.PolicyAdmin     = (*policy.Policy)(nil)
	_ adminapi.Decider         = (*policy.Policy)(nil)
)

// Server is a running Kith server.
type Server struct {
	extraMu      sync.Mutex
	extraMetrics []prometheus.Gatherer // see AddMetrics

	cfg Config
	log *slog.Logger
	td  spiffeid.TrustDomain
	// k8s are the Kubernetes controllers of the clusters that have them; their Runs are in controllers.
	k8s      []*controllers.Set
	liveMesh []string // clusters whose controllers follow SMI and Istio policies
	// controllers run with the server: the Kubernetes controllers when a cluster has them.
	controllers []func(context.Context) error
	store       store.Backend
	ca          *ca.CA
	caLeader    atomic.Bool // holds the CA rotation lease (servers sharing a store)
	serverName  string      // server_name: this server among those sharing a store
	admin       *adminapi.Service
	agent       *agentapi.Service
	metrics     *metrics
	own         *ownSVID
	policy      *policy.Policy
	dd          dataDir
	reinit      *reinitRecord // set when New re-initialised the data dir
	health      *readiness
	anchor      *auditAnchor
	console     *console.Console // nil when ui.enabled says off

	mu         sync.Mutex
	ready      chan struct{}
	httpAddr   net.Addr
	grpcAddr   net.Addr
	adminAddr  net.Addr // admin.listen, when on
	bundleAddr net.Addr // the bundle endpoint's, nil when none
	oidcAddr   net.Addr // listen.oidc_discovery's, nil when none
}

// New opens the store and the CA in the data dir.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Config == nil {
		return nil, errors.New("server: config is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := cfg.Config
	td, err := spiffeid.TrustDomainFromString(c.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("trust domain: %w", err)
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	// The data dir holds the CA keys and the store: a pre-existing one open to others is tightened.
	if fi, err := os.Stat(c.DataDir); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	} else if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		if err := os.Chmod(c.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("data dir %s is mode %#o, open to other users, and cannot be made 0700: %w", c.DataDir, perm, err)
		}
		cfg.Logger.Warn("data dir was open to other users; made it 0700", "data_dir", c.DataDir, "was", fmt.Sprintf("%#o", perm))
	}
	dd := dataDir{dir: c.DataDir, dbPath: c.Store.DSN, now: cfg.Now}
	var reinit *reinitRecord
	if c.Store.Driver == "sqlite" {
		// The lost-database checks are about the data dir's own database file.
		if reinit, err = dd.prepare(ctx, cfg.Reinit, cfg.Logger); err != nil {
			return nil, err
		}
	} else if cfg.Reinit {
		return nil, errors.New("--reinit refused: it starts over a data dir whose sqlite database was lost; a postgres store is restored from the database's own backups")
	}
	_, markerErr := os.Stat(dd.markerPath())
	keys, err := openKeys(ctx, c)
	if err != nil {
		return nil, err
	}
	anchor, err := newAuditAnchor(ctx, c.DataDir, td.Name(), keys, cfg.Now, cfg.Logger.With("component", "audit"))
	if err != nil {
		return nil, err
	}
	st, err := openStore(ctx, c, cfg, anchor.record)
	if err != nil {
		return nil, err
	}
	if err := anchor.verify(ctx, st, markerErr == nil); err != nil {
		st.Close()
		return nil, err
	}
	upstream, upstreamName, err := newUpstream(ctx, c.CA.Upstream, cfg.Now, cfg.Logger.With("component", "ca.upstream"))
	if err != nil {
		st.Close()
		return nil, err
	}
	s := &Server{}
	var shared *ca.Shared
	var serverName string
	if sh, ok := st.(sharedStore); ok {
		name, chosen, err := resolveServerName(c.ServerName, c.DataDir)
		if err != nil {
			st.Close()
			return nil, err
		}
		if chosen {
			cfg.Logger.Info("server_name is not set: this server named itself (kept in the data dir); set server_name to choose", "server_name", name)
		}
		serverName = name
		// Several servers on one database: each signs with an intermediate of its own, one (the holder
		// of the rotation lease) rotates the roots and JWT keys, and every change to the authorities is
		// made under one database lock (servers starting together on an empty database make one CA).
		shared = &ca.Shared{
			Name:   serverName,
			Lock:   func(ctx context.Context, fn func() error) error { return sh.Locked(ctx, postgres.LockCA, fn) },
			Leader: s.caLeader.Load,
		}
	}
	if shared == nil && c.ServerName != "" {
		cfg.Logger.Warn("server_name is set, but only servers sharing a postgres store use it; this one's store is sqlite", "server_name", c.ServerName)
	}
	authority, err := ca.New(ctx, ca.Config{
		Shared:           shared,
		Upstream:         upstream,
		UpstreamName:     upstreamName,
		UpstreamRetryMax: c.CA.Upstream.RetryMax.D(),
		TrustDomain:      td,
		Keys:             keys,
		Store:            st,
		Now:              cfg.Now,
		Logger:           cfg.Logger.With("component", "ca"),
		RootTTL:          c.CA.RootTTL.D(),
		IntermediateTTL:  c.CA.IntermediateTTL.D(),
		X509SVIDTTL:      c.SVID.X509TTL.D(),
		MaxX509SVIDTTL:   c.SVID.MaxX509TTL.D(),
		MinSVIDTTL:       c.SVID.MinTTL.D(),
		JWTSVIDTTL:       c.SVID.JWTTTL.D(),
		MaxJWTSVIDTTL:    c.SVID.MaxJWTTTL.D(),
		RootOverlap:      c.CA.RootOverlap.D(),
		Subject:          pkix.Name{Organization: []string{c.CA.Organization}},
		JWTIssuer:        c.CA.JWTIssuer,
	})
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("start ca: %w", err)
	}
	if reinit != nil {
		if err := st.Audit(ctx, "system", "server.reinit", c.DataDir, reinit); err != nil {
			st.Close()
			return nil, fmt.Errorf("reinit: record it in the audit log: %w", err)
		}
		cfg.Logger.Warn("data dir re-initialised with a new CA; the old keys and database were kept",
			"moved_to", reinit.MovedTo, "old_root_sha256", reinit.OldRootSHA256)
	}
	if err := dd.writeMarker(td.Name(), authority.Authorities()); err != nil {
		st.Close()
		return nil, fmt.Errorf("data dir: write %s: %w", dd.markerPath(), err)
	}
	s.cfg, s.log, s.td, s.store, s.ca, s.dd, s.reinit, s.anchor, s.ready = cfg, cfg.Logger, td, st, authority, dd, reinit, anchor, make(chan struct{})
	s.serverName = serverName
	s.metrics = newMetrics(authority.Authorities, authority.Status, st.Revision, cfg.Now)
	s.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kith_audit_chain_intact",
		Help: "1 if the audit log verified at start and reached its signed checkpoint, 0 if rows were altered or removed (see the server log).",
	}, func() float64 {
		if ok, _ := anchor.intact(); ok {
			return 1
		}
		return 0
	}))
	s.health = &readiness{store: st, now: cfg.Now}
	s.health.probe(ctx)
	s.policy, err = policy.New(ctx, policy.Config{
		Store: st, DataDir: c.DataDir, Source: c.Policy, TrustDomain: td,
		Engine:     authz.Config{Now: cfg.Now, Logger: cfg.Logger.With("component", "authz"), Decision: c.Authz.Decision, WhatIf: true},
		Registerer: s.metrics.reg,
		Logger:     cfg.Logger.With("component", "policy"),
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	nodeAttestors, err := attestors.Node(td, st, cfg.Now)
	if err != nil {
		st.Close()
		return nil, err
	}
	if clusters := c.NodeAttestors.K8sPSAT.Clusters; len(clusters) > 0 {
		psat, err := attestors.K8sPSAT(td, clusters)
		if err != nil {
			st.Close()
			return nil, err
		}
		nodeAttestors[k8spsat.Type] = psat
		for _, cl := range clusters {
			if !cl.Controllers {
				continue
			}
			set, err := controllers.New(td, controllers.Cluster{Name: cl.Name, Kubeconfig: cl.Kubeconfig, ServiceAccountTemplate: cl.ServiceAccountTemplate}, st, cfg.Logger.With("component", "kubernetes", "cluster", cl.Name))
			if err != nil {
				st.Close()
				return nil, err
			}
			s.controllers = append(s.controllers, set.Runs...)
			s.k8s = append(s.k8s, set)
			s.liveMesh = append(s.liveMesh, cl.Name)
		}
	}
	s.agent, err = agentapi.New(agentapi.Config{
		Authz: s.policy, Policy: s.policy, Reports: st, Bundles: st,
		TrustDomain: td, Attestors: nodeAttestors, Agents: st, Entries: st, Changes: st, Audit: st, CA: authority,
		AgentTTL: c.SVID.AgentTTL.D(),
		Now:      cfg.Now,
		Logger:   cfg.Logger.With("component", "agentapi"),
		OnIssue:  s.metrics.observeIssue,
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	var oidcLogin adminapi.OIDCLogin
	if c.Users.OIDC.Issuer != "" {
		if oidcLogin, err = newOIDCLogin(ctx, td, c.Users.OIDC); err != nil {
			st.Close()
			return nil, err
		}
	}
	var sessions *console.Sessions
	var consoleLogins interface {
		Issue(spiffeid.ID) (string, time.Time, error)
	}
	if c.UIOn() {
		sessions = console.NewSessions(cfg.Now)
		consoleLogins = sessions
	}
	s.admin, err = adminapi.New(adminapi.Config{
		TrustDomain: td, Entries: st, Tokens: st, Agents: st, Audit: st, CA: authority,
		Grants: st, Decider: s.policy, Policy: s.policy,
		Logger: cfg.Logger.With("component", "admin"), Now: cfg.Now,
		Actor:    adminActor,
		X509TTL:  adminapi.TTLBounds{Min: c.SVID.MinTTL.D(), Max: c.SVID.MaxX509TTL.D()},
		JWTTTL:   adminapi.TTLBounds{Min: c.SVID.MinTTL.D(), Max: c.SVID.MaxJWTTTL.D()},
		TokenTTL: c.Token.TTL.D(), TokenMaxTTL: c.Token.MaxTTL.D(),
		DefaultParent:    cfg.DefaultParent,
		OnIssue:          s.metrics.observeIssue,
		Connected:        s.agent.Connected,
		Acknowledgements: s.agent,
		Version:          cfg.Version,
		StoreCheck:       st,
		AuditHead:        anchor,
		Kubernetes:       s.kubernetesStatus,
		LiveMeshClusters: s.liveMesh,
		Activity:         s.identityActivity,
		Feed:             st,
		Logins: adminapi.Logins{Users: st, SVIDTTL: c.Users.SVIDTTL.D(), LoginTTL: c.Users.LoginTTL.D(), CodeTTL: c.Users.CodeTTL.D(),
			URL: c.Admin.URL, OIDC: oidcLogin},
		Requests:     st,
		AdminDecider: s.policy,
		Federations:  st,
		ConsoleURL:   s.ConsoleURL, ConsoleLogins: consoleLogins,
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	if c.UIOn() {
		host, _, _ := net.SplitHostPort(c.Listen.HTTP)
		ip := net.ParseIP(host)
		s.console, err = console.New(console.Config{Admin: s.admin, Feed: st, Now: cfg.Now,
			LoopbackOnly: host == "localhost" || (ip != nil && ip.IsLoopback()),
			Logger:       cfg.Logger.With("component", "console"),
			Sessions:     sessions, Writer: consoleWriter{s.admin, s.policy}, AsUser: adminapi.WithUser})
		if err != nil {
			st.Close()
			return nil, err
		}
	}
	return s, nil
}

// consoleWriter is the admin API as the console changes things through it: each call authorized first by
// the kith.admin policy, as for a user's call over mTLS.
type consoleWriter struct {
	*adminapi.Service
	d adminapi.AdminDecider
}

func (w consoleWriter) Authorize(ctx context.Context, method string, req any) error {
	return w.Service.Authorize(ctx, w.d, method, req)
}

// identityActivity is what this server's agents last reported about identity id, for GetIdentityActivity.
func (s *Server) identityActivity(id string) *adminv1.GetIdentityActivityResponse {
	a := s.agent.IdentityActivity(id)
	resp := &adminv1.GetIdentityActivityResponse{AgentsReporting: int32(a.Agents)}
	if !a.Oldest.IsZero() {
		resp.OldestReport = timestamppb.New(a.Oldest)
	}
	for _, h := range a.SVIDs {
		resp.Svids = append(resp.Svids, &adminv1.IssuedSVID{AgentId: h.Agent, EntryId: h.Entry, SerialNumber: h.Serial, ExpiresAt: timestamppb.New(h.ExpiresAt)})
	}
	for _, c := range a.Callers {
		resp.Callers = append(resp.Callers, &adminv1.CallerDecisions{Caller: c.Caller, Allowed: c.Allowed, Denied: c.Denied})
	}
	return resp
}

// kubernetesStatus is what the Kubernetes controllers know, for GetKubernetesStatus.
func (s *Server) kubernetesStatus() []*adminv1.KubernetesCluster {
	out := make([]*adminv1.KubernetesCluster, 0, len(s.k8s))
	for _, set := range s.k8s {
		st := set.Status()
		cl := &adminv1.KubernetesCluster{Name: st.Cluster, Synced: st.Synced}
		for _, id := range st.Identities {
			cl.Identities = append(cl.Identities, &adminv1.KubernetesIdentity{Name: id.Name, SpiffeIdTemplate: id.Template,
				PodsMatched: int32(id.PodsMatched), Entries: int32(id.Entries), LastError: id.LastError})
		}
		for _, g := range st.Grants {
			cl.Grants = append(cl.Grants, &adminv1.KubernetesGrant{Namespace: g.Namespace, Name: g.Name, GrantId: g.GrantID, Refused: g.Refused})
		}
		for _, obj := range slices.Sorted(maps.Keys(st.Mesh)) {
			cl.MeshPolicies = append(cl.MeshPolicies, &adminv1.KubernetesMeshPolicy{Object: obj, Effect: st.Mesh[obj]})
		}
		out = append(out, cl)
	}
	return out
}

// Reinitialised reports whether New started over with a new CA (Config.Reinit on a data dir whose
// database was lost).
func (s *Server) Reinitialised() bool { return s.reinit != nil }

// TrustDomain returns the server's trust domain.
func (s *Server) TrustDomain() spiffeid.TrustDomain { return s.td }

// CA returns the server's certificate authority.
func (s *Server) CA() *ca.CA { return s.ca }

// Ready is closed once every listener is up.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// HTTPAddr is the bound HTTP address, valid after Ready.
func (s *Server) HTTPAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.httpAddr
}

// ConsoleURL is the web console's address, valid after Ready; "" when the console is off (ui.enabled).
func (s *Server) ConsoleURL() string {
	if s.console == nil {
		return ""
	}
	return "http://" + s.HTTPAddr().String() + console.Prefix
}

// GRPCAddr is the bound agent API address, valid after Ready.
// BundleEndpointAddr is the bundle endpoint's address once Run listens; nil when none is configured.
func (s *Server) BundleEndpointAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bundleAddr
}

// OIDCDiscoveryAddr is listen.oidc_discovery's address once Run listens; nil when none is configured.
func (s *Server) OIDCDiscoveryAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.oidcAddr
}

func (s *Server) GRPCAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grpcAddr
}

// AdminAddr is the bound admin TCP address (admin.listen), valid after Ready; nil when off.
func (s *Server) AdminAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.adminAddr
}

// Run serves until ctx is done, then shuts down gracefully and closes the store.
func (s *Server) Run(ctx context.Context) error {
	defer s.store.Close()
	c := s.cfg.Config

	adminLis, err := unixsock.Listen(c.Listen.AdminSocket, 0o600)
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	adminLis = unixsock.Restrict(adminLis, unixsock.RestrictConfig{
		Name: "admin socket", Allow: adminAllow(c.Admin), Logger: s.log, Now: s.cfg.Now,
		OnRefuse: s.metrics.adminRefused.Inc,
	})
	httpLis, err := net.Listen("tcp", c.Listen.HTTP)
	if err != nil {
		adminLis.Close()
		return fmt.Errorf("listen http on %s (listen.http): %w", c.Listen.HTTP, err)
	}
	grpcLis, err := net.Listen("tcp", c.Listen.GRPC)
	if err != nil {
		adminLis.Close()
		httpLis.Close()
		return fmt.Errorf("listen grpc on %s (listen.grpc): %w", c.Listen.GRPC, err)
	}
	s.mu.Lock()
	s.httpAddr, s.grpcAddr = httpLis.Addr(), grpcLis.Addr()
	s.mu.Unlock()
	s.ca.SetJWTIssuer(s.issuer())
	closeAll := func() { adminLis.Close(); httpLis.Close(); grpcLis.Close() }
	var oidcLis, bundleLis net.Listener
	if a := c.Listen.OIDCDiscovery; a != "" {
		if oidcLis, err = net.Listen("tcp", a); err != nil {
			closeAll()
			return fmt.Errorf("listen oidc discovery on %s (listen.oidc_discovery): %w", a, err)
		}
	}
	bundleSrv, err := s.bundleEndpoint()
	if err == nil && bundleSrv != nil {
		if bundleLis, err = net.Listen("tcp", c.Federation.BundleEndpoint.Address); err != nil {
			err = fmt.Errorf("listen on %s (federation.bundle_endpoint.address): %w", c.Federation.BundleEndpoint.Address, err)
		}
	}
	if err != nil {
		closeAll()
		if oidcLis != nil {
			oidcLis.Close()
		}
		return err
	}
	s.mu.Lock()
	if bundleLis != nil {
		s.bundleAddr = bundleLis.Addr()
	}
	if oidcLis != nil {
		s.oidcAddr = oidcLis.Addr()
	}
	s.mu.Unlock()
	refresher, err := federation.NewRefresher(federation.RefresherConfig{Store: s.store, Now: s.cfg.Now, Logger: s.log.With("component", "federation")})
	if err != nil {
		closeAll()
		return err
	}

	adminSrv := grpc.NewServer(
		grpc.Creds(adminCredentials()),
		grpc.ChainUnaryInterceptor(apierr.UnaryInterceptor(s.log)),
		grpc.ChainStreamInterceptor(apierr.StreamInterceptor(s.log)),
	)
	adminv1.RegisterAdminServiceServer(adminSrv, s.admin)

	agentSrv, err := s.newAgentServer()
	if err != nil {
		adminLis.Close()
		httpLis.Close()
		grpcLis.Close()
		return err
	}
	httpSrv := &http.Server{Handler: s.httpHandler(), ReadHeaderTimeout: 10 * time.Second}
	var (
		remoteLis net.Listener
		remoteSrv *grpc.Server
	)
	if c.Admin.Listen != "" {
		if remoteLis, err = net.Listen("tcp", c.Admin.Listen); err != nil {
			adminLis.Close()
			httpLis.Close()
			grpcLis.Close()
			return fmt.Errorf("listen on %s (admin.listen): %w", c.Admin.Listen, err)
		}
		s.mu.Lock()
		s.adminAddr = remoteLis.Addr()
		s.mu.Unlock()
		// The admin API over mTLS: the server's own SVID, the caller's user SVID verified against the
		// bundle, every call authorized by the kith.admin policy.
		remoteSrv = grpc.NewServer(
			grpc.Creds(credentials.NewTLS(s.agentTLSConfig(s.own))),
			grpc.ChainUnaryInterceptor(apierr.UnaryInterceptor(s.log), s.admin.AuthorizeInterceptor(s.policy)),
			grpc.ChainStreamInterceptor(apierr.StreamInterceptor(s.log), refuseStreams),
			grpc.ConnectionTimeout(10*time.Second),
		)
		adminv1.RegisterAdminServiceServer(remoteSrv, s.admin)
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.ca.Run(gctx) })
	if shared, ok := s.store.(sharedStore); ok {
		// Several servers on one database: each rotates its own intermediate; one at a time (the lease
		// holder) rotates the roots and JWT keys; all follow each other's changes.
		g.Go(func() error { return shared.Lead(gctx, postgres.LeaseCARotation, 2*time.Second, s.leadCA) })
		g.Go(func() error { return s.followCA(gctx) })
	}
	g.Go(func() error { return s.policy.Run(gctx) })
	for _, run := range s.controllers {
		g.Go(func() error { return run(gctx) })
	}
	g.Go(func() error {
		changed, stop := s.ca.Subscribe()
		defer stop()
		return s.own.Run(gctx, changed)
	})
	g.Go(func() error { return s.keepMarker(gctx) })
	g.Go(func() error { return s.health.Run(gctx) })
	g.Go(func() error { return s.anchor.Run(gctx) })
	g.Go(func() error { return ignoreClosed(adminSrv.Serve(adminLis)) })
	g.Go(func() error { return ignoreClosed(agentSrv.Serve(grpcLis)) })
	g.Go(func() error { return ignoreClosed(httpSrv.Serve(httpLis)) })
	if remoteSrv != nil {
		g.Go(func() error { return ignoreClosed(remoteSrv.Serve(remoteLis)) })
	}
	g.Go(func() error { return refresher.Run(gctx) })
	if bundleLis != nil {
		g.Go(func() error { return serveTLS(gctx, bundleSrv, bundleLis) })
	}
	if oidcLis != nil {
		oidcSrv := &http.Server{Handler: s.oidcHandler(), ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			go func() { <-gctx.Done(); _ = oidcSrv.Close() }()
			return ignoreClosed(oidcSrv.Serve(oidcLis))
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		s.log.Info("shutting down")
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = httpSrv.Shutdown(shutdownCtx)
		stopGracefully(shutdownCtx, adminSrv)
		stopGracefully(shutdownCtx, agentSrv)
		if remoteSrv != nil {
			stopGracefully(shutdownCtx, remoteSrv)
		}
		return nil
	})
	close(s.ready)
	s.log.Info("kith server started", "trust_domain", s.td.Name(), "admin_socket", c.Listen.AdminSocket,
		"grpc", grpcLis.Addr().String(), "http", httpLis.Addr().String(), "data_dir", c.DataDir)
	s.log.Info("jwt-svid issuer", "iss", s.issuer())
	if s.serverName != "" {
		s.log.Info("sharing the store with other servers", "server_name", s.serverName)
	}
	if bundleLis != nil {
		s.log.Info("bundle endpoint serving", "address", addrString(bundleLis), "profile", c.Federation.BundleEndpoint.Profile)
	}
	if oidcLis != nil {
		s.log.Info("oidc discovery serving", "address", addrString(oidcLis))
	}
	err = g.Wait()
	os.Remove(c.Listen.AdminSocket)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func addrString(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}

func stopGracefully(ctx context.Context, srv *grpc.Server) {
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		srv.Stop()
	}
}

func ignoreClosed(err error) error {
	if err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, http.ErrServerClosed) || errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Admin is the admin API service, for in-process callers such as `kith dev`.
func (s *Server) Admin() *adminapi.Service { return s.admin }

// openStore opens the configured store backend; everything after it uses the store contract only.
func openStore(ctx context.Context, c *config.Server, cfg Config, onAuditHead func(int64, []byte)) (store.Backend, error) {
	if c.Store.Driver == "postgres" {
		st, err := postgres.Open(ctx, postgres.Config{URL: c.Store.URL, MaxConns: c.Store.MaxConns, Now: cfg.Now,
			Logger: cfg.Logger.With("component", "store"), OnAuditHead: onAuditHead})
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		return st, nil
	}
	st, err := sqlite.Open(ctx, sqlite.Config{Path: c.Store.DSN, Now: cfg.Now, Logger: cfg.Logger, OnAuditHead: onAuditHead})
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	return st, nil
}

// openKeys opens the configured key manager: the database one (shared by several servers) or one from
// the registry.
func openKeys(ctx context.Context, c *config.Server) (ca.KeyManager, error) {
	if c.CA.KeyManager == "database" {
		kek, err := postgres.ReadKEK(c.CA.KEKFile)
		if err != nil {
			return nil, fmt.Errorf("open key manager: %w", err)
		}
		keys, err := postgres.OpenKeys(ctx, c.Store.URL, kek)
		if err != nil {
			return nil, fmt.Errorf("open key manager: %w", err)
		}
		return keys, nil
	}
	keys, err := keymanager.New(c.CA.KeyManager, keymanager.Options{Dir: filepath.Join(c.DataDir, "keys")})
	if err != nil {
		return nil, fmt.Errorf("open key manager: %w", err)
	}
	return keys, nil
}

// sharedStore is a store several servers share (postgres): leases and locks across them.
type sharedStore interface {
	Lead(ctx context.Context, key int64, retry time.Duration, run func(context.Context) error) error
	Locked(ctx context.Context, key int64, fn func() error) error
}

// leadCA makes this server the one rotating the CA's roots and JWT keys while it holds the rotation lease
// (ctx ends when it loses it).
func (s *Server) leadCA(ctx context.Context) error {
	s.caLeader.Store(true)
	s.log.Info("ca: this server now rotates the roots and jwt keys", "server_name", s.serverName)
	s.ca.Kick()
	<-ctx.Done()
	s.caLeader.Store(false)
	return nil
}

// followCA reloads the CA whenever another server changed the authorities (it rotated them), so that this
// server signs with the active intermediate and publishes the same bundle.
func (s *Server) followCA(ctx context.Context) error {
	revs, stop := s.store.Watch()
	defer stop()
	last, err := s.store.Revision(ctx)
	if err != nil {
		last = 0
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case rev, ok := <-revs:
			if !ok {
				return nil
			}
			if rev < last {
				// The database went back (restored, or failed over to a replica without the last
				// commits): the authorities may be other ones than those loaded.
				last = rev
				if err := s.ca.Reload(ctx); err != nil {
					s.log.Error("ca: the store's history went back and reloading the authorities failed", "error", err)
				}
				continue
			}
		}
		changes, err := s.store.ChangesSince(ctx, last)
		if err != nil {
			s.log.Warn("ca: reading changes to follow other servers' rotations failed; retrying on the next change", "error", err)
			continue
		}
		reload := false
		for _, ch := range changes {
			last = max(last, ch.Revision)
			reload = reload || ch.Kind == store.KindAuthority || ch.Kind == store.KindHistory
		}
		if reload {
			if err := s.ca.Reload(ctx); err != nil {
				s.log.Error("ca: another server changed the authorities and reloading them failed", "error", err)
			}
		}
	}
}

// refuseStreams: the admin API has no streaming calls; one over mTLS would escape authorization.
func refuseStreams(any, grpc.ServerStream, *grpc.StreamServerInfo, grpc.StreamHandler) error {
	return status.Error(codes.PermissionDenied, "streaming calls are not served on the admin TCP listener")
}
