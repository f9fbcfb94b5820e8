package sds

import (
	"errors"
	"maps"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/svid/cache"
)

// pushable is a stream the hub can offer updates to.
type pushable interface {
	state() *streamState
	push() // send what changed since the last response; called by the pusher
}

// streamState is the state every stream has. mu serializes Send and guards the fields below it.
type streamState struct {
	srv      *Server
	pending  atomic.Pointer[cache.Update] // newest update for this stream's selectors
	queued   atomic.Bool                  // in the pusher's queue
	send     atomic.Int32                 // push state: sendIdle, sendBusy or sendAgain
	closed   atomic.Bool                  // handler returned
	deferred atomic.Bool                  // a push found mu held by the handler and left itself to it

	mu      sync.Mutex
	started bool   // the first request was answered
	nodeID  string // from the first request that names a node
	form    form
	n       uint64 // responses sent
	nonce   string // nonce of the last response
}

func (b *streamState) state() *streamState { return b }

// tryLock takes mu for a push. When the stream's handler holds it — answering a request, possibly blocked
// in Send to a proxy that stopped reading — the push does not wait: it is left to the handler, which
// queues the stream again when it lets go (unlock), so no worker waits on a stream's own handler.
func (b *streamState) tryLock() bool {
	if b.mu.TryLock() {
		return true
	}
	b.deferred.Store(true)
	if !b.mu.TryLock() {
		return false
	}
	b.deferred.Store(false) // the holder let go meanwhile; it may have queued the stream too, which is harmless
	return true
}

// unlock releases mu after a request and queues the stream for the push that tryLock left to it.
func (b *streamState) unlock(st pushable) {
	b.mu.Unlock()
	if b.deferred.Swap(false) && !b.closed.Load() {
		b.srv.push.offer(st)
	}
}

func (b *streamState) setNode(id string, f form, has bool) {
	if b.nodeID == "" && has {
		b.nodeID, b.form = id, f
	}
}

func notFound(err error) error {
	if errors.Is(err, errUnknownName) {
		return status.Error(codes.NotFound, err.Error())
	}
	return err
}

// sotwStream is a state-of-the-world stream (StreamSecrets or StreamAggregatedResources).
type sotwStream struct {
	streamState
	st      sotwServer
	names   []string // requested; empty: everything
	version string   // version of the last response
	acked   string   // version the proxy last accepted
}

func (s *sotwStream) handle(req *discoveryv3.DiscoveryRequest) error {
	if err := checkType(req.GetTypeUrl()); err != nil {
		return err
	}
	names, err := requestedNames(req.GetResourceNames())
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.unlock(s)
	s.setNode(req.GetNode().GetId(), formFor(req.GetNode()), req.GetNode() != nil)
	if !s.started {
		s.started = true
		s.names = names
		s.acked = req.GetVersionInfo()
		return s.respond(true)
	}
	if req.GetResponseNonce() != s.nonce {
		s.srv.log.Debug("ignore stale sds request", "node", s.nodeID, "nonce", req.GetResponseNonce(), "current", s.nonce)
		return nil
	}
	if req.GetErrorDetail() != nil {
		s.nack(s.version, s.nonce, req.GetErrorDetail().GetMessage())
		return nil
	}
	if !sameSet(names, s.names) {
		s.names = names
		return s.respond(true)
	}
	s.acked = req.GetVersionInfo() // an ACK: nothing to send
	return nil
}

// respond sends the current state for the requested names. A requested response (force) fails on
// unknown names; a push skips names that went away and sends nothing when nothing changed.
func (s *sotwStream) respond(force bool) error {
	items, err := resolveNames(s.pending.Load(), s.names, force)
	if err != nil {
		return notFound(err)
	}
	names, bs, err := s.srv.buildAll(items, s.form)
	if err != nil {
		return err
	}
	version := responseVersion(names, bs)
	if !force && version == s.version {
		return nil
	}
	resp := &discoveryv3.DiscoveryResponse{VersionInfo: version, TypeUrl: SecretType, Nonce: s.nextNonce()}
	resp.Resources = make([]*anypb.Any, len(bs))
	for i, b := range bs {
		resp.Resources[i] = b.any
	}
	if err := s.st.Send(resp); err != nil {
		return err
	}
	s.version, s.nonce = version, resp.Nonce
	return nil
}

func (s *sotwStream) push() {
	if !s.tryLock() {
		return
	}
	defer s.mu.Unlock()
	if s.closed.Load() || !s.started {
		return
	}
	if err := s.respond(false); err != nil {
		s.srv.log.Debug("push secrets", "node", s.nodeID, "error", err)
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	x, y := slices.Clone(a), slices.Clone(b)
	sort.Strings(x)
	sort.Strings(y)
	return slices.Equal(x, y)
}

// deltaStream is an incremental stream (DeltaSecrets or DeltaAggregatedResources).
type deltaStream struct {
	streamState
	st       deltaServer
	wildcard bool
	subs     map[string]struct{} // explicitly subscribed names
	sent     map[string]string   // name → version the proxy has
}

const wildcardName = "*"

func (d *deltaStream) handle(req *discoveryv3.DeltaDiscoveryRequest) error {
	if err := checkType(req.GetTypeUrl()); err != nil {
		return err
	}
	subscribe, err := requestedNames(req.GetResourceNamesSubscribe())
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.unlock(d)
	d.setNode(req.GetNode().GetId(), formFor(req.GetNode()), req.GetNode() != nil)
	first := !d.started
	if first {
		if len(req.GetInitialResourceVersions()) > maxNames {
			return status.Errorf(codes.InvalidArgument, "%d initial_resource_versions: at most %d are accepted per stream", len(req.GetInitialResourceVersions()), maxNames)
		}
		d.started = true
		d.wildcard = len(subscribe) == 0
		d.subs = map[string]struct{}{}
		d.sent = maps.Clone(req.GetInitialResourceVersions())
		if d.sent == nil {
			d.sent = map[string]string{}
		}
	} else if req.GetResponseNonce() == d.nonce && req.GetErrorDetail() != nil {
		d.nack("", d.nonce, req.GetErrorDetail().GetMessage())
	}
	// Subscription changes are honoured whatever the nonce; the nonce only qualifies ACKs and NACKs.
	changed := first
	u := d.pending.Load()
	for _, n := range subscribe {
		changed = true
		if n == wildcardName {
			d.wildcard = true
			continue
		}
		if _, err := resolve(u, n); err != nil {
			return notFound(err)
		}
		d.subs[n] = struct{}{}
	}
	for _, n := range req.GetResourceNamesUnsubscribe() {
		changed = true
		if n == wildcardName {
			d.wildcard = false
			continue
		}
		delete(d.subs, n)
	}
	if len(d.subs) > maxNames {
		return status.Errorf(codes.InvalidArgument, "subscribed to %d distinct resource names: at most %d are served per stream; unsubscribe from some names, or subscribe to %q to get everything the workload may have", len(d.subs), maxNames, wildcardName)
	}
	if !changed {
		return nil
	}
	return d.respond(first)
}

// respond sends the resources whose version the proxy does not have and the names it should drop.
func (d *deltaStream) respond(force bool) error {
	u := d.pending.Load()
	var items []item
	if d.wildcard {
		items = resolveAll(u)
	}
	for _, n := range slices.Sorted(maps.Keys(d.subs)) {
		if it, err := resolve(u, n); err == nil {
			items = append(items, it)
		}
	}
	names, bs, err := d.srv.buildAll(items, d.form)
	if err != nil {
		return err
	}
	current := make(map[string]struct{}, len(names))
	resp := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: SecretType}
	for i, n := range names {
		if _, dup := current[n]; dup {
			continue
		}
		current[n] = struct{}{}
		if d.sent[n] == bs[i].version {
			continue
		}
		resp.Resources = append(resp.Resources, &discoveryv3.Resource{Name: n, Version: bs[i].version, Resource: bs[i].any})
	}
	for n := range d.sent {
		if _, ok := current[n]; !ok {
			resp.RemovedResources = append(resp.RemovedResources, n)
		}
	}
	sort.Strings(resp.RemovedResources)
	if !force && len(resp.Resources) == 0 && len(resp.RemovedResources) == 0 {
		return nil
	}
	resp.SystemVersionInfo = responseVersion(names, bs)
	resp.Nonce = d.nextNonce()
	if err := d.st.Send(resp); err != nil {
		return err
	}
	d.nonce = resp.Nonce
	for _, r := range resp.Resources {
		d.sent[r.Name] = r.Version
	}
	for _, n := range resp.RemovedResources {
		delete(d.sent, n)
	}
	return nil
}

func (d *deltaStream) push() {
	if !d.tryLock() {
		return
	}
	defer d.mu.Unlock()
	if d.closed.Load() || !d.started {
		return
	}
	if err := d.respond(false); err != nil {
		d.srv.log.Debug("push secrets", "node", d.nodeID, "error", err)
	}
}

// hub is the streams of one selector set, sharing one cache subscription and one watching goroutine.
type hub struct {
	key  string
	sub  *cache.Subscription
	done chan struct{}

	mu      sync.Mutex
	latest  *cache.Update
	streams map[pushable]struct{}
}

// join adds a stream to the hub of its selector set, starting the hub if it is the first.
func (s *Server) join(sels []attestation.Selector, st pushable) *hub {
	key := selectorKey(sels)
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.hubs[key]
	if h == nil {
		sub := s.cache.Subscribe(sels)
		h = &hub{key: key, sub: sub, done: make(chan struct{}), latest: <-sub.Updates(), streams: map[pushable]struct{}{}}
		s.hubs[key] = h
		go s.watch(h)
	}
	h.mu.Lock()
	h.streams[st] = struct{}{}
	st.state().pending.Store(h.latest)
	h.mu.Unlock()
	return h
}

// leave removes a stream; the last one out stops the hub.
func (s *Server) leave(h *hub, st pushable) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h.mu.Lock()
	delete(h.streams, st)
	empty := len(h.streams) == 0
	h.mu.Unlock()
	if empty {
		delete(s.hubs, h.key)
		h.sub.Finish()
		close(h.done)
	}
}

// watch offers each update to the hub's streams; streams whose secrets changed are queued for a push.
func (s *Server) watch(h *hub) {
	for {
		select {
		case u := <-h.sub.Updates():
			h.mu.Lock()
			h.latest = u
			for st := range h.streams {
				st.state().pending.Store(u)
				s.push.offer(st)
			}
			h.mu.Unlock()
		case <-h.done:
			return
		}
	}
}

// pusher sends pushes with at most max workers, so a stream costs no goroutine of its own and a slow
// proxy holds up one worker, not its whole hub.
//
// A proxy that stops reading makes Send block (gRPC flow control) until it reads again or its stream
// ends. A worker whose push has not returned within wait leaves it to finish on its own goroutine and
// hands its place to a new worker, so stalled streams cannot pin the workers every other stream needs.
// A stream gets no further push while one is in flight; when that one returns, the stream is queued
// again if a newer update came meanwhile. A stalled stream thus holds at most one goroutine, until its
// proxy reads or goes away.
type pusher struct {
	wait time.Duration // how long a worker waits for one push before leaving it

	mu      sync.Mutex
	queue   []pushable
	workers int
	max     int
	stalled int // pushes left to finish on their own
}

// offer queues a stream for a push unless it is queued already.
func (p *pusher) offer(st pushable) {
	if st.state().queued.CompareAndSwap(false, true) {
		p.enqueue(st)
	}
}

func (p *pusher) enqueue(st pushable) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queue = append(p.queue, st)
	if p.workers < p.max {
		p.workers++
		go p.work()
	}
}

func (p *pusher) work() {
	for {
		p.mu.Lock()
		if len(p.queue) == 0 {
			p.workers--
			p.queue = nil
			p.mu.Unlock()
			return
		}
		st := p.queue[0]
		p.queue[0] = nil
		p.queue = p.queue[1:]
		p.mu.Unlock()
		if !p.run(st) {
			return // another worker took this one's place
		}
	}
}

// run pushes to a stream. It reports false if the push outlasted p.wait: the calling goroutine is then
// no longer a worker and must exit.
func (p *pusher) run(st pushable) bool {
	b := st.state()
	b.queued.Store(false)
	if !b.beginSend() {
		return true // a push is in flight; it queues the stream again when it returns
	}
	// Whichever comes first, the push returning or the timer, claims the outcome. The timer claims
	// under p.mu, so stalled never goes below zero.
	var claimed atomic.Bool
	t := time.AfterFunc(p.wait, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if claimed.CompareAndSwap(false, true) {
			p.stalled++
			go p.work() // in place of the worker stuck in this push
		}
	})
	st.push()
	if b.endSend() {
		p.offer(st)
	}
	if claimed.CompareAndSwap(false, true) {
		t.Stop()
		return true
	}
	p.mu.Lock()
	p.stalled--
	p.mu.Unlock()
	return false
}

// Push states of a stream.
const (
	sendIdle  int32 = iota
	sendBusy        // a push is being sent
	sendAgain       // a push is being sent and a newer update came meanwhile
)

// beginSend claims the stream for a push. If a push is in flight it records that another is due and
// reports false.
func (b *streamState) beginSend() bool {
	for {
		switch b.send.Load() {
		case sendIdle:
			if b.send.CompareAndSwap(sendIdle, sendBusy) {
				return true
			}
		case sendBusy:
			if b.send.CompareAndSwap(sendBusy, sendAgain) {
				return false
			}
		default:
			return false
		}
	}
}

// endSend releases the stream and reports whether another push is due.
func (b *streamState) endSend() bool {
	return b.send.Swap(sendIdle) == sendAgain
}
