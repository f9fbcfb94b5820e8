package sds

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/peer"
	"github.com/kithid/kith/logclip"
	"github.com/kithid/kith/svid/cache"
)

// Attestor derives a workload's selectors from its unix peer credentials.
type Attestor interface {
	Attest(ctx context.Context, creds peer.Credentials) ([]attestation.Selector, error)
}

// Cache is the agent cache the secrets come from.
type Cache interface {
	Subscribe(selectors []attestation.Selector) *cache.Subscription
	Ready() bool
}

// Config configures a [Server].
type Config struct {
	Attestor Attestor     // required
	Cache    Cache        // required
	Logger   *slog.Logger // zero: discard
	// OnNACK is called with the proxy's node id each time a proxy rejects a response (a metric hook).
	// Zero: no-op.
	OnNACK func(nodeID string)
}

// Server serves the Secret Discovery Service and the secret type of the Aggregated Discovery Service.
// It is safe for concurrent use.
type Server struct {
	attestor Attestor
	cache    Cache
	log      *slog.Logger
	onNACK   func(string)
	memo     memo
	push     pusher

	mu   sync.Mutex
	hubs map[string]*hub // by selector set
}

// pushWait is how long a push worker waits for one Send before leaving it to finish on its own.
const pushWait = time.Second

// New returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Attestor == nil {
		return nil, errors.New("sds: Config.Attestor is required")
	}
	if cfg.Cache == nil {
		return nil, errors.New("sds: Config.Cache is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.OnNACK == nil {
		cfg.OnNACK = func(string) {}
	}
	return &Server{
		attestor: cfg.Attestor,
		cache:    cfg.Cache,
		log:      cfg.Logger,
		onNACK:   cfg.OnNACK,
		push:     pusher{max: max(8, 4*runtime.GOMAXPROCS(0)), wait: pushWait},
		hubs:     map[string]*hub{},
	}, nil
}

// Register registers envoy.service.secret.v3.SecretDiscoveryService and
// envoy.service.discovery.v3.AggregatedDiscoveryService (secrets only: requests for other type URLs
// end the stream with InvalidArgument) on g.
func (s *Server) Register(g grpc.ServiceRegistrar) {
	secretv3.RegisterSecretDiscoveryServiceServer(g, sdsService{s})
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, adsService{s})
}

type (
	sotwServer  = grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	deltaServer = grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]
)

type sdsService struct{ s *Server }

func (h sdsService) StreamSecrets(st sotwServer) error { return h.s.serveSotW(st) }
func (h sdsService) DeltaSecrets(st deltaServer) error { return h.s.serveDelta(st) }
func (h sdsService) FetchSecrets(ctx context.Context, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	return h.s.fetch(ctx, req)
}

type adsService struct{ s *Server }

func (h adsService) StreamAggregatedResources(st sotwServer) error { return h.s.serveSotW(st) }
func (h adsService) DeltaAggregatedResources(st deltaServer) error { return h.s.serveDelta(st) }

var (
	_ secretv3.SecretDiscoveryServiceServer        = sdsService{}
	_ discoveryv3.AggregatedDiscoveryServiceServer = adsService{}
)

// attest returns the caller's selectors, or a status error.
func (s *Server) attest(ctx context.Context) ([]attestation.Selector, error) {
	creds, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no unix peer credentials: connect over the agent's unix socket")
	}
	sels, err := s.attestor.Attest(ctx, creds)
	if err != nil {
		s.log.Warn("attest sds caller", "pid", creds.PID, "uid", creds.UID, "error", err)
		return nil, status.Errorf(codes.PermissionDenied, "attest workload pid %d: %v", creds.PID, err)
	}
	if !s.cache.Ready() {
		return nil, status.Error(codes.Unavailable, "the agent has no trust bundle yet: retry shortly")
	}
	return sels, nil
}

func checkType(typeURL string) error {
	if typeURL != "" && typeURL != SecretType {
		return status.Errorf(codes.InvalidArgument, "type %q is not served here: the kith agent serves only %s", typeURL, SecretType)
	}
	return nil
}

func (s *Server) fetch(ctx context.Context, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	if err := checkType(req.GetTypeUrl()); err != nil {
		return nil, err
	}
	names, err := requestedNames(req.GetResourceNames())
	if err != nil {
		return nil, err
	}
	sels, err := s.attest(ctx)
	if err != nil {
		return nil, err
	}
	sub := s.cache.Subscribe(sels)
	defer sub.Finish()
	var u *cache.Update
	select {
	case u = <-sub.Updates():
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	items, err := resolveNames(u, names, true)
	if err != nil {
		return nil, status.Error(codes.NotFound, err.Error())
	}
	names, bs, err := s.buildAll(items, formFor(req.GetNode()))
	if err != nil {
		return nil, err
	}
	resp := &discoveryv3.DiscoveryResponse{VersionInfo: responseVersion(names, bs), TypeUrl: SecretType, Nonce: "1"}
	for _, b := range bs {
		resp.Resources = append(resp.Resources, b.any)
	}
	return resp, nil
}

func (s *Server) buildAll(items []item, f form) ([]string, []built, error) {
	names := make([]string, len(items))
	bs := make([]built, len(items))
	for i, it := range items {
		b, err := s.memo.build(it, f)
		if err != nil {
			s.log.Error("build secret", "name", it.name, "error", err)
			return nil, nil, status.Errorf(codes.Internal, "build secret %q", it.name)
		}
		names[i], bs[i] = it.name, b
	}
	return names, bs, nil
}

// serve runs a stream's receive loop on the handler's goroutine; pushes are sent by the pusher.
func (s *Server) serve(ctx context.Context, st pushable, recv func() error) error {
	sels, err := s.attest(ctx)
	if err != nil {
		return err
	}
	h := s.join(sels, st)
	defer func() {
		s.leave(h, st)
		b := st.state()
		b.mu.Lock() // wait for a push in flight: no Send after the handler returns
		b.closed.Store(true)
		b.mu.Unlock()
	}()
	for {
		if err := recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func (s *Server) serveSotW(st sotwServer) error {
	ss := &sotwStream{streamState: streamState{srv: s}, st: st}
	return s.serve(st.Context(), ss, func() error {
		req, err := st.Recv()
		if err != nil {
			return err
		}
		return ss.handle(req)
	})
}

func (s *Server) serveDelta(st deltaServer) error {
	ds := &deltaStream{streamState: streamState{srv: s}, st: st}
	return s.serve(st.Context(), ds, func() error {
		req, err := st.Recv()
		if err != nil {
			return err
		}
		return ds.handle(req)
	})
}

// maxLogged bounds each string a proxy sent, as logged.
const maxLogged = 256

// nack records a proxy's rejection of a response.
func (b *streamState) nack(version, nonce, message string) {
	b.srv.log.Warn("proxy rejected secrets", "node", logclip.Cut(b.nodeID, maxLogged), "version", logclip.Cut(version, maxLogged),
		"nonce", logclip.Cut(nonce, maxLogged), "error", logclip.Cut(message, maxLogged))
	b.srv.onNACK(b.nodeID)
}

func (b *streamState) nextNonce() string {
	b.n++
	return strconv.FormatUint(b.n, 10)
}

// selectorKey identifies a selector set.
func selectorKey(sels []attestation.Selector) string {
	var sb strings.Builder
	for _, sel := range attestation.Normalize(slices.Clone(sels)) {
		sb.WriteString(sel.String())
		sb.WriteByte(0)
	}
	return sb.String()
}
