package sds

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"google.golang.org/grpc"
)

// TestStalledProxiesDoNotHoldUpOthers: proxies that stop reading make the server's Send block on flow
// control. They must not hold the push workers, or no other proxy on the node gets rotated secrets.
func TestStalledProxiesDoNotHoldUpOthers(t *testing.T) {
	e := newEnv(t)
	e.cache.SetBundle(e.bigBundle(300)) // about 150 KB of PEM: a response far larger than a flow-control window
	srv, err := New(Config{Attestor: fixedAttestor{selsA}, Cache: e.cache})
	if err != nil {
		t.Fatal(err)
	}
	srv.push.max = 2                       // fewer workers than stalled streams
	srv.push.wait = 100 * time.Millisecond // keep the test short; the default is a second
	sock := listenSDS(t, srv)

	good := openSotW(t, dialSDS(t, sock), nil)
	good.request("ROOTCA")
	good.recv()
	good.ack("ROOTCA")

	// The stalled proxies read their first response, then nothing. Small windows make Send block soon.
	stalledConn := dialSDS(t, sock, grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
	var stalled []*stalledClient
	for range 6 {
		stalled = append(stalled, openStalled(t, stalledConn, "ROOTCA", "ALL", "spiffe://example.org"))
	}

	// The first push fills the stalled streams' windows and buffers; the pushes after it block in Send.
	var latest *spiffebundle.Bundle
	for i := range 3 {
		latest = e.bigBundle(300)
		e.cache.SetBundle(latest)
		r := good.recvWithin(10 * time.Second)
		if _, pemBytes := bundlePEMOf(t, secrets(t, r.Resources)["ROOTCA"]); !bytes.Equal(pemBytes, bundlePEM(latest)) {
			t.Fatalf("bundle change %d: the well-behaved stream got an old bundle", i+1)
		}
		good.ack("ROOTCA")
	}

	t.Run("each stalled stream holds one push, and no worker", func(t *testing.T) {
		waitFor(t, func() (bool, string) {
			n, workers := srv.push.counts()
			return n == len(stalled) && workers == 0, fmt.Sprintf("%d stalled pushes and %d workers, want %d and 0", n, workers, len(stalled))
		})
	})
	t.Run("a stalled proxy that reads again gets the latest bundle", func(t *testing.T) {
		c := stalled[0]
		deadline := time.After(10 * time.Second)
		for {
			r, err := c.recv(deadline)
			if err != nil {
				t.Fatalf("no response with the latest bundle: %v", err)
			}
			if _, pemBytes := bundlePEMOf(t, secrets(t, r.Resources)["ROOTCA"]); bytes.Equal(pemBytes, bundlePEM(latest)) {
				return
			}
		}
	})
	t.Run("closing the stalled streams leaves no push behind", func(t *testing.T) {
		for _, c := range stalled {
			c.cancel()
		}
		waitFor(t, func() (bool, string) {
			n, workers := srv.push.counts()
			streams := srv.streamCount()
			return n == 0 && workers == 0 && streams == 1, fmt.Sprintf("%d stalled pushes, %d workers and %d streams, want 0, 0 and 1", n, workers, streams)
		})
	})
	t.Run("the well-behaved stream still gets pushes", func(t *testing.T) {
		latest = e.bigBundle(1)
		e.cache.SetBundle(latest)
		r := good.recvWithin(10 * time.Second)
		if _, pemBytes := bundlePEMOf(t, secrets(t, r.Resources)["ROOTCA"]); !bytes.Equal(pemBytes, bundlePEM(latest)) {
			t.Fatal("got an old bundle")
		}
	})
}

// stalledClient is a StreamSecrets stream that reads only when asked to.
type stalledClient struct {
	st     grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	cancel context.CancelFunc
}

// openStalled opens a stream, requests names and reads the first response.
func openStalled(t *testing.T, conn *grpc.ClientConn, names ...string) *stalledClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: SecretType, ResourceNames: names}); err != nil {
		t.Fatal(err)
	}
	c := &stalledClient{st: st, cancel: cancel}
	if _, err := c.recv(time.After(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	return c
}

// recv reads one response, giving up at deadline.
func (c *stalledClient) recv(deadline <-chan time.Time) (*discoveryv3.DiscoveryResponse, error) {
	type result struct {
		r   *discoveryv3.DiscoveryResponse
		err error
	}
	ch := make(chan result, 1)
	go func() {
		r, err := c.st.Recv()
		ch <- result{r, err}
	}()
	select {
	case res := <-ch:
		return res.r, res.err
	case <-deadline:
		c.cancel() // ends the Recv above
		return nil, context.DeadlineExceeded
	}
}

// waitFor polls cond until it holds, failing with its description after 10s.
func waitFor(t *testing.T, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, desc := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %s", desc)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *pusher) counts() (stalled, workers int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stalled, p.workers
}

// streamCount returns the number of streams the server has open.
func (s *Server) streamCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, h := range s.hubs {
		h.mu.Lock()
		n += len(h.streams)
		h.mu.Unlock()
	}
	return n
}

// bigBundle returns the CA's bundle plus n new self-signed roots.
func (e *env) bigBundle(n int) *spiffebundle.Bundle {
	e.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		e.t.Fatal(err)
	}
	b := e.ca.Bundle().Clone()
	for range n {
		serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
		if err != nil {
			e.t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber:          serial,
			Subject:               pkix.Name{CommonName: "extra root " + serial.String()},
			NotBefore:             time.Now().Add(-time.Minute),
			NotAfter:              time.Now().Add(time.Hour),
			IsCA:                  true,
			BasicConstraintsValid: true,
			KeyUsage:              x509.KeyUsageCertSign,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			e.t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			e.t.Fatal(err)
		}
		b.AddX509Authority(c)
	}
	return b
}

// A push to a stream whose handler holds its lock (answering a request, maybe blocked in Send to a proxy
// that stopped reading) returns at once instead of waiting; the handler queues the stream again when it
// lets go, so the update is not lost.
func TestAPushDoesNotWaitForTheStreamsHandler(t *testing.T) {
	srv := &Server{push: pusher{max: 1, wait: time.Hour}}
	st := &sotwStream{streamState: streamState{srv: srv}}
	st.started = true
	st.mu.Lock() // the handler, busy

	done := make(chan struct{})
	go func() { st.push(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second): // a failure bound, not a speed target
		t.Fatal("push waited for the handler")
	}
	if !st.deferred.Load() {
		t.Fatal("the push was not left to the handler")
	}
	srv.push.mu.Lock()
	queuedBefore := len(srv.push.queue) + srv.push.workers
	srv.push.mu.Unlock()
	if queuedBefore != 0 {
		t.Fatalf("queued before the handler let go: %d", queuedBefore)
	}

	st.started = false // the queued push then has nothing to send (this stream has no gRPC stream)
	st.unlock(st)      // the handler lets go
	if st.deferred.Load() {
		t.Error("deferred push still pending after unlock")
	}
	srv.push.mu.Lock()
	queued := len(srv.push.queue) + srv.push.workers
	srv.push.mu.Unlock()
	if queued == 0 {
		t.Error("the stream was not queued again for its push")
	}
}
