package workloadapi

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"
	"weak"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/peer"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/svid/cache"
)

// Attestor derives a workload's selectors from its unix peer credentials.
type Attestor interface {
	Attest(ctx context.Context, creds peer.Credentials) ([]attestation.Selector, error)
}

// Cache is what the handler reads from the agent's cache.
type Cache interface {
	Subscribe(selectors []attestation.Selector) *cache.Subscription
	Ready() bool
	Bundle() *spiffebundle.Bundle
	MatchingEntries(selectors []attestation.Selector) []cache.Entry
}

// JWTMinter returns a JWT-SVID for an entry and audience (the agent asks the server and caches).
type JWTMinter interface {
	FetchJWTSVID(ctx context.Context, entry cache.Entry, audience []string) (*jwtsvid.SVID, error)
}

// Config configures a [Handler].
type Config struct {
	Attestor Attestor     // required
	Cache    Cache        // required
	JWT      JWTMinter    // required
	Logger   *slog.Logger // zero: discard
}

// HintLabel is the entry label whose value is sent as the SVID hint, so that a workload with
// several identities can tell them apart.
const HintLabel = "hint"

// headerKey is the metadata key every Workload API request must carry with the value "true".
const headerKey = "workload.spiffe.io"

// Handler implements the SPIFFE Workload API. It is safe for concurrent use.
type Handler struct {
	workload.UnimplementedSpiffeWorkloadAPIServer

	attestor Attestor
	cache    Cache
	jwt      JWTMinter
	log      *slog.Logger
}

var _ workload.SpiffeWorkloadAPIServer = (*Handler)(nil)

// New returns a Handler for cfg.
func New(cfg Config) (*Handler, error) {
	switch {
	case cfg.Attestor == nil:
		return nil, errors.New("workload api: attestor is required")
	case cfg.Cache == nil:
		return nil, errors.New("workload api: cache is required")
	case cfg.JWT == nil:
		return nil, errors.New("workload api: jwt minter is required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{attestor: cfg.Attestor, cache: cfg.Cache, jwt: cfg.JWT, log: log}, nil
}

// Register registers the handler on s, a gRPC server created with grpc.Creds(peer.TransportCredentials()).
func (h *Handler) Register(s grpc.ServiceRegistrar) {
	workload.RegisterSpiffeWorkloadAPIServer(s, h)
}

// FetchX509SVID streams the caller's X.509-SVIDs with their keys and bundles, and again whenever
// they change. It ends with PermissionDenied when the caller has no identity (left).
func (h *Handler) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	return toStatus(h.fetchX509SVID(stream.Context(), stream))
}

// FetchX509Bundles streams the X.509 trust bundles, and again whenever one changes.
func (h *Handler) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	return toStatus(streamBundles(stream.Context(), h, "FetchX509Bundles", stream, x509BundlesResponse))
}

// FetchJWTBundles streams the JWT bundles as JWKS documents, and again whenever one changes.
func (h *Handler) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	return toStatus(streamBundles(stream.Context(), h, "FetchJWTBundles", stream, jwtBundlesResponse))
}

// FetchJWTSVID returns a JWT-SVID for each of the caller's identities (or only the requested one)
// for the requested audience.
func (h *Handler) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	resp, err := h.fetchJWTSVID(ctx, req)
	return resp, toStatus(err)
}

// ValidateJWTSVID validates a JWT-SVID against the agent's trust bundle and the audience, and returns
// its SPIFFE ID and claims.
func (h *Handler) ValidateJWTSVID(ctx context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	resp, err := h.validateJWTSVID(ctx, req)
	return resp, toStatus(err)
}

// caller checks the security header, attests the caller and checks that the agent can serve. It
// returns the caller's selectors and a logger for the call.
func (h *Handler) caller(ctx context.Context, method string) ([]attestation.Selector, *slog.Logger, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(headerKey); len(v) != 1 || v[0] != "true" {
		return nil, nil, errMissingHeader
	}
	creds, ok := peer.FromContext(ctx)
	if !ok {
		return nil, nil, errNoCredentials
	}
	log := h.log.With("method", method, "pid", creds.PID, "uid", creds.UID)
	sels, err := h.attestor.Attest(ctx, creds)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, nil, ctxErr
		}
		log.Debug("workload attestation failed", "error", err)
		return nil, nil, codeErrorf(codes.PermissionDenied, "workload attestation failed: %w", err)
	}
	log.Debug("workload attested", "selectors", attestation.Strings(sels))
	if !h.cache.Ready() {
		return nil, nil, errNotReady
	}
	return sels, log, nil
}

func (h *Handler) fetchX509SVID(ctx context.Context, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	sels, log, err := h.caller(ctx, "FetchX509SVID")
	if err != nil {
		return err
	}
	sub := h.cache.Subscribe(sels)
	defer sub.Finish()
	var (
		last *x509Content
		rest <-chan time.Time // while set, the stream rests after a large message
	)
	for {
		var u *cache.Update
		select {
		case <-ctx.Done():
			return nil
		case u = <-sub.Updates():
		}
		if rest != nil {
			// Wait out the rest, then send the newest view: the updates in between are never encoded.
			select {
			case <-ctx.Done():
				return nil
			case <-rest:
			}
			rest = nil
			select {
			case u = <-sub.Updates():
			default:
			}
		}
		if len(u.Identities) == 0 {
			log.Debug("no identity issued")
			return errNoIdentity
		}
		sent, size, err := sendX509(stream, u, last, log)
		if err != nil {
			return err
		}
		if sent != nil {
			last = sent
			if gap := pushGap(size); gap > 0 {
				rest = time.After(gap)
			}
		}
	}
}

// sendX509 sends the update's message unless it holds what last held; it returns what it sent (nil for
// nothing) and its size. The message itself is not kept: between sends a stream holds only what it sent
// last, not the bytes.
func sendX509(stream grpc.ServerStream, u *cache.Update, last *x509Content, log *slog.Logger) (*x509Content, int, error) {
	msg := u.Memo(x509MessageKey{}, func() any { return &x509Memo{} }).(*x509Memo).get(u, log)
	if last != nil && last.same(msg.content) {
		return nil, 0, nil
	}
	if err := stream.SendMsg(msg.raw); err != nil {
		return nil, 0, err
	}
	log.Debug("sent x509-svids", "count", len(msg.content.svids), "seq", u.Seq)
	return msg.content, msg.raw.size, nil
}

// pushRate paces the messages of one stream: after a message of n bytes the next follows no sooner than
// n/pushRate later. A workload with a handful of identities is never held back (its messages are under
// the 64 KiB threshold), while one holding ten thousand (about 17 MB a message) gets a few full messages a
// second while its identities are being issued, each with the newest view, instead of one per signing
// batch that it could not have parsed in time anyway.
const pushRate = 100 << 20 // bytes per second

// pushGap is how long a stream rests after a message of n bytes; none for messages under 64 KiB.
func pushGap(n int) time.Duration {
	if n < 64<<10 {
		return 0
	}
	return time.Duration(float64(n) / pushRate * float64(time.Second))
}

// x509Message is an X509SVIDResponse encoded once per cache update (see rawMessage).
type x509Message struct {
	raw     *rawMessage
	content *x509Content
}

// x509Content is what a message holds, to skip sending the same content twice.
type x509Content struct {
	svids   []sentSVID
	bundles []*spiffebundle.Bundle // own, then federated by trust domain name
}

type sentSVID struct {
	svid *cache.SVID
	hint string
}

func (c *x509Content) same(o *x509Content) bool {
	return slices.Equal(c.svids, o.svids) && slices.Equal(c.bundles, o.bundles)
}

type x509MessageKey struct{}

// x509Memo holds an update's encoded message weakly: streams sending it keep it alive, and once none
// does the garbage collector may take it (a workload with ten thousand identities makes a message of
// about 17 MB); a stream that comes later encodes it again.
type x509Memo struct {
	mu  sync.Mutex
	msg weak.Pointer[x509Message]
}

func (m *x509Memo) get(u *cache.Update, log *slog.Logger) *x509Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	if msg := m.msg.Value(); msg != nil {
		return msg
	}
	raw, sent := encodeX509SVIDs(u, log)
	content := &x509Content{svids: sent, bundles: []*spiffebundle.Bundle{u.Bundle}}
	for _, td := range sortedTrustDomains(u.Federated) {
		content.bundles = append(content.bundles, u.Federated[td])
	}
	msg := &x509Message{raw: raw, content: content}
	m.msg = weak.Make(msg)
	return msg
}

// streamBundles serves FetchX509Bundles and FetchJWTBundles: bundles go only to callers that have at
// least one registration entry, and a response is sent only when it differs from the last one.
func streamBundles[R any, PR interface {
	*R
	proto.Message
}](ctx context.Context, h *Handler, method string, stream grpc.ServerStreamingServer[R], build func(*cache.Update) (PR, error)) error {
	sels, log, err := h.caller(ctx, method)
	if err != nil {
		return err
	}
	sub := h.cache.Subscribe(sels)
	defer sub.Finish()
	var last PR
	for {
		select {
		case <-ctx.Done():
			return nil
		case u := <-sub.Updates():
			if len(h.cache.MatchingEntries(sels)) == 0 {
				log.Debug("no identity issued")
				return errNoIdentity
			}
			resp, err := build(u)
			if err != nil {
				return err
			}
			if last != nil && proto.Equal(resp, last) {
				continue
			}
			if err := stream.Send((*R)(resp)); err != nil {
				return err
			}
			last = resp
			log.Debug("sent bundles", "seq", u.Seq)
		}
	}
}

func (h *Handler) fetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	if err := ca.CheckAudience(req.Audience); err != nil {
		return nil, codeErrorf(codes.InvalidArgument, "%w", err)
	}
	var want spiffeid.ID
	if req.SpiffeId != "" {
		id, err := spiffeid.FromString(req.SpiffeId)
		if err != nil {
			return nil, codeErrorf(codes.InvalidArgument, "invalid requested spiffe id %q: %w", req.SpiffeId, err)
		}
		want = id
	}
	sels, log, err := h.caller(ctx, "FetchJWTSVID")
	if err != nil {
		return nil, err
	}
	resp := &workload.JWTSVIDResponse{}
	hints := map[string]bool{}
	for _, e := range h.cache.MatchingEntries(sels) {
		if !want.IsZero() && e.SPIFFEID != want {
			continue
		}
		hint := e.Labels[HintLabel]
		if hint != "" && hints[hint] {
			log.Warn("skipping identity with a hint already in use", "entry", e.ID, "hint", hint)
			continue
		}
		hints[hint] = true
		svid, err := h.jwt.FetchJWTSVID(ctx, e, req.Audience)
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return nil, ctxErr
			}
			log.Warn("could not fetch jwt-svid", "entry", e.ID, "spiffe_id", e.SPIFFEID.String(), "error", err)
			return nil, codeErrorf(codes.Unavailable, "could not fetch jwt-svid for %s: %w", e.SPIFFEID, err)
		}
		resp.Svids = append(resp.Svids, &workload.JWTSVID{SpiffeId: e.SPIFFEID.String(), Svid: svid.Marshal(), Hint: hint})
	}
	if len(resp.Svids) == 0 {
		log.Debug("no identity issued", "requested", req.SpiffeId)
		return nil, errNoIdentity
	}
	log.Debug("sent jwt-svids", "count", len(resp.Svids), "audience", req.Audience)
	return resp, nil
}

func (h *Handler) validateJWTSVID(ctx context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	switch {
	case req.Audience == "":
		return nil, codeErrorf(codes.InvalidArgument, "audience must be specified")
	case req.Svid == "":
		return nil, codeErrorf(codes.InvalidArgument, "svid must be specified")
	}
	_, log, err := h.caller(ctx, "ValidateJWTSVID")
	if err != nil {
		return nil, err
	}
	bundle := h.cache.Bundle()
	svid, err := jwtsvid.ParseAndValidate(req.Svid, bundle, []string{req.Audience})
	if err != nil {
		log.Debug("invalid jwt-svid", "error", err)
		return nil, codeErrorf(codes.InvalidArgument, "%w", err)
	}
	claims, err := structpb.NewStruct(svid.Claims)
	if err != nil {
		return nil, codeErrorf(codes.Internal, "convert jwt-svid claims: %w", err)
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: svid.ID.String(), Claims: claims}, nil
}

func bundleFor(u *cache.Update, td spiffeid.TrustDomain) *spiffebundle.Bundle {
	if u.Bundle != nil && u.Bundle.TrustDomain() == td {
		return u.Bundle
	}
	return u.Federated[td]
}

// x509Roots returns the bundle's X.509 authorities as concatenated DER.
func x509Roots(b *spiffebundle.Bundle) []byte {
	if b == nil {
		return nil
	}
	var buf bytes.Buffer
	for _, c := range b.X509Authorities() {
		buf.Write(c.Raw)
	}
	return buf.Bytes()
}

func x509BundlesResponse(u *cache.Update) (*workload.X509BundlesResponse, error) {
	resp := &workload.X509BundlesResponse{Bundles: map[string][]byte{}}
	for _, b := range u.Bundles() {
		resp.Bundles[b.TrustDomain().IDString()] = x509Roots(b)
	}
	return resp, nil
}

func jwtBundlesResponse(u *cache.Update) (*workload.JWTBundlesResponse, error) {
	resp := &workload.JWTBundlesResponse{Bundles: map[string][]byte{}}
	for _, b := range u.Bundles() {
		jwks, err := b.JWTBundle().Marshal()
		if err != nil {
			return nil, codeErrorf(codes.Internal, "marshal jwt bundle for %s: %w", b.TrustDomain(), err)
		}
		resp.Bundles[b.TrustDomain().IDString()] = jwks
	}
	return resp, nil
}
