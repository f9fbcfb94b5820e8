package agentapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/node"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/keymanager/memory"
	"github.com/kithid/kith/internal/server/apierr"
	"github.com/kithid/kith/internal/server/attestors"
	"github.com/kithid/kith/internal/store"
	"github.com/kithid/kith/internal/store/sqlite"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// clock is real time plus an offset the test moves forward.
type clock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off += d
}

// harness is the agent API served over TLS on 127.0.0.1 from a real store and CA.
type harness struct {
	st       *sqlite.Store
	ca       *ca.CA
	svc      *Service
	clock    *clock
	addr     string
	serverID spiffeid.ID
	issued   map[string]int
	issuedMu sync.Mutex
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return newHarnessWith(t, nil)
}

// newHarnessWith serves, beside the server's own node attestors, the extra ones.
func newHarnessWith(t *testing.T, extra map[string]node.Attestor) *harness {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "kith.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	authority, err := ca.New(ctx, ca.Config{TrustDomain: td, Keys: memory.New(), Store: st})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{st: st, ca: authority, clock: &clock{}, serverID: spiffeid.RequireFromPath(td, "/kith/server"), issued: map[string]int{}}
	nodeAttestors, err := attestors.Node(td, st, h.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	maps.Copy(nodeAttestors, extra)
	h.svc, err = New(Config{
		TrustDomain: td, Attestors: nodeAttestors, Agents: st, Entries: st, Changes: st, Audit: st, CA: authority,
		AgentTTL: time.Hour, Now: h.clock.Now,
		OnIssue: func(kind string, _ time.Duration) {
			h.issuedMu.Lock()
			defer h.issuedMu.Unlock()
			h.issued[kind]++
		},
	})
	if err != nil {
		t.Fatal(err)
	}

	own := h.newSVID(t, h.serverID)
	cert := &tls.Certificate{PrivateKey: own.PrivateKey, Leaf: own.Certificates[0]}
	for _, c := range own.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	tlsCfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{*cert},
		ClientAuth:   tls.RequestClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return nil
			}
			_, _, err := x509svid.ParseAndVerify(raw, h.bundle())
			return err
		},
	}
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.ChainUnaryInterceptor(apierr.UnaryInterceptor(slog.New(slog.DiscardHandler))),
		grpc.ChainStreamInterceptor(apierr.StreamInterceptor(slog.New(slog.DiscardHandler))),
		grpc.MaxSendMsgSize(64<<20),
	)
	agentv1.RegisterAgentServiceServer(srv, h.svc)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	h.addr = lis.Addr().String()
	return h
}

func (h *harness) bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(td, h.ca.Bundle().X509Authorities())
}

// newSVID signs an SVID for id directly with the CA.
func (h *harness) newSVID(t *testing.T, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	key, csr := newCSR(t)
	chain, err := h.ca.SignX509SVID(context.Background(), ca.X509SVIDRequest{ID: id, CSR: csr})
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}
}

func newCSR(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, csr
}

func (h *harness) dial(t *testing.T, cfg *tls.Config) agentv1.AgentServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return agentv1.NewAgentServiceClient(conn)
}

// anon is a client without a client certificate, as an agent before it attests.
func (h *harness) anon(t *testing.T) agentv1.AgentServiceClient {
	return h.dial(t, tlsconfig.TLSClientConfig(h.bundle(), tlsconfig.AuthorizeID(h.serverID)))
}

// as is a client presenting svid over mTLS.
func (h *harness) as(t *testing.T, svid *x509svid.SVID) agentv1.AgentServiceClient {
	return h.dial(t, tlsconfig.MTLSClientConfig(svid, h.bundle(), tlsconfig.AuthorizeID(h.serverID)))
}

func hashOf(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

func (h *harness) token(t *testing.T, name, secret string, expires time.Time) store.JoinToken {
	t.Helper()
	tok, err := h.st.CreateJoinToken(context.Background(), "test", store.JoinToken{Name: name, Hash: hashOf(secret), ExpiresAt: expires})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func attestReq(t *testing.T, secret string) (*ecdsa.PrivateKey, *agentv1.AttestRequest) {
	key, csr := newCSR(t)
	return key, &agentv1.AttestRequest{AttestationType: "join_token", Payload: []byte(secret), Csr: csr}
}

// join creates a token named name and attests with it, returning the agent SVID.
func (h *harness) join(t *testing.T, name string) *x509svid.SVID {
	t.Helper()
	secret := "secret-" + name
	h.token(t, name, secret, time.Now().Add(time.Hour))
	key, req := attestReq(t, secret)
	resp, err := h.anon(t).Attest(context.Background(), req)
	if err != nil {
		t.Fatalf("Attest(%s): %v", name, err)
	}
	return svidOf(t, resp.GetSvidChain(), key)
}

func svidOf(t *testing.T, chain [][]byte, key *ecdsa.PrivateKey) *x509svid.SVID {
	t.Helper()
	var certs []*x509.Certificate
	for _, raw := range chain {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}
}

func (h *harness) entry(t *testing.T, e store.Entry) store.Entry {
	t.Helper()
	if len(e.Selectors) == 0 {
		e.Selectors = []attestation.Selector{{Type: "unix", Key: "uid", Value: "1000"}}
	}
	out, err := h.st.CreateEntry(context.Background(), "test", e)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("%s: code %v (%v), want %v", what, got, err, want)
	}
}

func entryIDs(es []*agentv1.Entry) []string {
	out := []string{}
	for _, e := range es {
		out = append(out, e.GetId())
	}
	slices.Sort(out)
	return out
}

func sorted(ids ...string) []string {
	out := append([]string{}, ids...)
	slices.Sort(out)
	return out
}

func TestAttest(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	client := h.anon(t)

	t.Run("a fresh token gives an agent svid that verifies against the bundle", func(t *testing.T) {
		h.token(t, "node1", "s1", time.Now().Add(time.Hour))
		key, req := attestReq(t, "s1")
		resp, err := client.Attest(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		want := "spiffe://example.org/kith/agent/join_token/node1"
		if resp.GetAgentId() != want {
			t.Errorf("agent id = %q, want %q", resp.GetAgentId(), want)
		}
		svid := svidOf(t, resp.GetSvidChain(), key)
		b, err := spiffebundle.Parse(td, resp.GetBundle().GetSpiffeBundle())
		if err != nil {
			t.Fatal(err)
		}
		id, _, err := x509svid.Verify(svid.Certificates, b)
		if err != nil {
			t.Fatalf("verify agent svid: %v", err)
		}
		if id.String() != want {
			t.Errorf("svid id = %s, want %s", id, want)
		}
		a, err := h.st.GetAgent(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if a.SerialNumber != svid.Certificates[0].SerialNumber.Text(16) || a.Evicted {
			t.Errorf("agent record serial %q evicted %v, want serial %q not evicted", a.SerialNumber, a.Evicted, svid.Certificates[0].SerialNumber.Text(16))
		}
		if diff := cmp.Diff([]string{"join_token:id:" + mustLookup(t, h, "s1").ID, "join_token:name:node1"}, attestation.Strings(a.Selectors)); diff != "" {
			t.Errorf("agent selectors (-want +got):\n%s", diff)
		}
	})

	t.Run("the same token again is refused and audited", func(t *testing.T) {
		_, req := attestReq(t, "s1")
		_, err := client.Attest(ctx, req)
		wantCode(t, "Attest with a used token", err, codes.PermissionDenied)
		if got := status.Convert(err).Message(); got != "join token is unknown, already used or expired" {
			t.Errorf("message = %q", got)
		}
		evs, err := h.st.ListAudit(ctx, store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		last := evs[len(evs)-1]
		if last.Action != "agent.attest.refused" || last.Actor != "agent:unauthenticated" {
			t.Errorf("last audit event = %s by %s, want agent.attest.refused by agent:unauthenticated", last.Action, last.Actor)
		}
	})

	t.Run("an expired token is refused", func(t *testing.T) {
		h.token(t, "node2", "s2", time.Now().Add(time.Minute))
		h.clock.advance(2 * time.Minute)
		defer h.clock.advance(-2 * time.Minute)
		_, req := attestReq(t, "s2")
		_, err := client.Attest(ctx, req)
		wantCode(t, "Attest with an expired token", err, codes.PermissionDenied)
		if _, err := h.st.GetAgent(ctx, spiffeid.RequireFromPath(td, "/kith/agent/join_token/node2")); err == nil {
			t.Error("an agent record exists for the expired token")
		}
	})

	t.Run("an unknown token is refused", func(t *testing.T) {
		_, req := attestReq(t, "never-issued")
		_, err := client.Attest(ctx, req)
		wantCode(t, "Attest with an unknown token", err, codes.PermissionDenied)
	})

	t.Run("an unknown attestation type is an invalid argument", func(t *testing.T) {
		_, req := attestReq(t, "s1")
		req.AttestationType = "tpm"
		_, err := client.Attest(ctx, req)
		wantCode(t, "Attest with type tpm", err, codes.InvalidArgument)
	})

	t.Run("a bad csr is an invalid argument and does not burn the token", func(t *testing.T) {
		h.token(t, "node3", "s3", time.Now().Add(time.Hour))
		_, err := client.Attest(ctx, &agentv1.AttestRequest{AttestationType: "join_token", Payload: []byte("s3"), Csr: []byte("junk")})
		wantCode(t, "Attest with a junk csr", err, codes.InvalidArgument)
		_, req := attestReq(t, "s3")
		if _, err := client.Attest(ctx, req); err != nil {
			t.Fatalf("Attest after a bad csr: %v", err)
		}
	})

	t.Run("an evicted agent attesting with a new token gets a fresh record", func(t *testing.T) {
		id := spiffeid.RequireFromPath(td, "/kith/agent/join_token/node1")
		if _, err := h.st.EvictAgent(ctx, "test", id); err != nil {
			t.Fatal(err)
		}
		// An unnamed token joins as its ID; name a new token so the agent joins under a fresh ID instead,
		// and check the old ID stays evicted while the new one is not.
		h.token(t, "node1-b", "s1b", time.Now().Add(time.Hour))
		_, req := attestReq(t, "s1b")
		resp, err := client.Attest(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		a, err := h.st.GetAgent(ctx, spiffeid.RequireFromString(resp.GetAgentId()))
		if err != nil {
			t.Fatal(err)
		}
		if a.Evicted {
			t.Error("the re-attested agent is evicted")
		}
	})
}

func mustLookup(t *testing.T, h *harness, secret string) store.JoinToken {
	t.Helper()
	tok, err := h.st.LookupJoinToken(context.Background(), hashOf(secret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// recv reads the next Sync message or fails after a deadline.
func recv(t *testing.T, stream grpc.ServerStreamingClient[agentv1.SyncResponse]) *agentv1.SyncResponse {
	t.Helper()
	type result struct {
		msg *agentv1.SyncResponse
		err error
	}
	ch := make(chan result, 1)
	go func() {
		m, err := stream.Recv()
		ch <- result{m, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Sync Recv: %v", r.err)
		}
		return r.msg
	case <-time.After(5 * time.Second):
		t.Fatal("no Sync message within 5s")
		return nil
	}
}

func TestSync(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	a := h.join(t, "node1")
	b := h.join(t, "node2")
	wl := func(p string) spiffeid.ID { return spiffeid.RequireFromPath(td, p) }
	parentA := h.entry(t, store.Entry{SPIFFEID: wl("/a/parented"), ParentID: a.ID})
	bySelA := h.entry(t, store.Entry{SPIFFEID: wl("/a/selected"), NodeSelectors: []attestation.Selector{{Type: "join_token", Key: "name", Value: "node1"}}})
	h.entry(t, store.Entry{SPIFFEID: wl("/b/parented"), ParentID: b.ID})
	h.entry(t, store.Entry{SPIFFEID: wl("/b/selected"), NodeSelectors: []attestation.Selector{{Type: "join_token", Key: "name", Value: "node2"}}})
	h.entry(t, store.Entry{SPIFFEID: wl("/both"), NodeSelectors: []attestation.Selector{
		{Type: "join_token", Key: "name", Value: "node1"}, {Type: "join_token", Key: "name", Value: "node2"}}})

	client := h.as(t, a)
	sctx, cancel := context.WithCancel(ctx)
	stream, err := client.Sync(sctx, &agentv1.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var last int64

	t.Run("the snapshot holds exactly the entries parented to or selecting this agent", func(t *testing.T) {
		msg := recv(t, stream)
		if !msg.GetFullSnapshot() || msg.GetBundle() == nil || msg.GetRevision() == 0 {
			t.Errorf("snapshot: full %v, bundle %v, revision %d", msg.GetFullSnapshot(), msg.GetBundle() != nil, msg.GetRevision())
		}
		if diff := cmp.Diff(sorted(parentA.ID, bySelA.ID), entryIDs(msg.GetEntries())); diff != "" {
			t.Errorf("snapshot entries (-want +got):\n%s", diff)
		}
		last = msg.GetRevision()
	})

	t.Run("the agent is connected while it syncs", func(t *testing.T) {
		if !h.svc.Connected(a.ID) || h.svc.Connected(b.ID) {
			t.Errorf("Connected(a) = %v, Connected(b) = %v; want true, false", h.svc.Connected(a.ID), h.svc.Connected(b.ID))
		}
	})

	var added store.Entry
	t.Run("a new entry arrives as a delta within milliseconds", func(t *testing.T) {
		h.entry(t, store.Entry{SPIFFEID: wl("/b/new"), ParentID: b.ID}) // not for a: must not arrive
		start := time.Now()
		added = h.entry(t, store.Entry{SPIFFEID: wl("/a/new"), ParentID: a.ID, DNSNames: []string{"new.example.org"}})
		msg := recv(t, stream)
		took := time.Since(start)
		t.Logf("entry create → delta on the stream: %v", took)
		if msg.GetFullSnapshot() {
			t.Error("delta is marked as a full snapshot")
		}
		if diff := cmp.Diff([]string{added.ID}, entryIDs(msg.GetEntries())); diff != "" {
			t.Errorf("delta entries (-want +got):\n%s", diff)
		}
		if got := msg.GetEntries()[0]; got.GetSpiffeId() != "spiffe://example.org/a/new" || !slices.Equal(got.GetDnsNames(), []string{"new.example.org"}) {
			t.Errorf("delta entry = %v", got)
		}
		if msg.GetRevision() != added.Revision {
			t.Errorf("delta revision = %d, want %d", msg.GetRevision(), added.Revision)
		}
		last = msg.GetRevision()
	})

	t.Run("a deleted entry arrives in deleted_entry_ids", func(t *testing.T) {
		if _, err := h.st.DeleteEntry(ctx, "test", added.ID); err != nil {
			t.Fatal(err)
		}
		msg := recv(t, stream)
		if diff := cmp.Diff([]string{added.ID}, msg.GetDeletedEntryIds()); diff != "" || len(msg.GetEntries()) != 0 {
			t.Errorf("delete delta: entries %v, deleted (-want +got):\n%s", msg.GetEntries(), diff)
		}
		last = msg.GetRevision()
	})

	t.Run("an entry moved to another agent is deleted here", func(t *testing.T) {
		moved := parentA
		moved.ParentID = b.ID
		if _, err := h.st.UpdateEntry(ctx, "test", moved); err != nil {
			t.Fatal(err)
		}
		msg := recv(t, stream)
		if diff := cmp.Diff([]string{parentA.ID}, msg.GetDeletedEntryIds()); diff != "" {
			t.Errorf("deleted (-want +got):\n%s", diff)
		}
		last = msg.GetRevision()
	})

	cancel()
	t.Run("the agent is no longer connected once its stream ends", func(t *testing.T) {
		deadline := time.Now().Add(5 * time.Second)
		for h.svc.Connected(a.ID) {
			if time.Now().After(deadline) {
				t.Fatal("agent still connected 5s after its stream was cancelled")
			}
			time.Sleep(time.Millisecond)
		}
	})

	t.Run("a re-sync from the last revision yields only later changes", func(t *testing.T) {
		later := h.entry(t, store.Entry{SPIFFEID: wl("/a/later"), ParentID: a.ID})
		h.entry(t, store.Entry{SPIFFEID: wl("/b/later"), ParentID: b.ID})
		stream, err := client.Sync(ctx, &agentv1.SyncRequest{Revision: last})
		if err != nil {
			t.Fatal(err)
		}
		msg := recv(t, stream)
		if msg.GetFullSnapshot() || msg.GetBundle() == nil {
			t.Errorf("re-sync: full %v, bundle %v; want a delta with the bundle", msg.GetFullSnapshot(), msg.GetBundle() != nil)
		}
		if diff := cmp.Diff([]string{later.ID}, entryIDs(msg.GetEntries())); diff != "" {
			t.Errorf("re-sync entries (-want +got):\n%s", diff)
		}
		if msg.GetRevision() <= later.Revision {
			t.Errorf("re-sync revision = %d, want past %d", msg.GetRevision(), later.Revision)
		}
	})

	t.Run("a ca rotation pushes the new bundle", func(t *testing.T) {
		stream, err := client.Sync(ctx, &agentv1.SyncRequest{})
		if err != nil {
			t.Fatal(err)
		}
		first := recv(t, stream)
		if err := h.ca.Rotate(ctx, "test", true); err != nil {
			t.Fatal(err)
		}
		for {
			msg := recv(t, stream)
			if msg.GetBundle() != nil {
				if msg.GetBundle().GetSequenceNumber() <= first.GetBundle().GetSequenceNumber() {
					t.Errorf("bundle sequence %d, want past %d", msg.GetBundle().GetSequenceNumber(), first.GetBundle().GetSequenceNumber())
				}
				return
			}
		}
	})
}

func TestSyncScale(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	a := h.join(t, "node1")
	const n = 10000
	es := make([]store.Entry, n)
	for i := range es {
		es[i] = store.Entry{
			SPIFFEID:  spiffeid.RequireFromPath(td, fmt.Sprintf("/svc/%05d", i)),
			ParentID:  a.ID,
			Selectors: []attestation.Selector{{Type: "unix", Key: "uid", Value: fmt.Sprint(i)}},
		}
	}
	if _, err := h.st.CreateEntries(ctx, "test", es); err != nil {
		t.Fatal(err)
	}
	client := h.as(t, a)

	start := time.Now()
	stream, err := client.Sync(ctx, &agentv1.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	snap := recv(t, stream)
	t.Logf("snapshot of %d entries: %v", len(snap.GetEntries()), time.Since(start))
	if len(snap.GetEntries()) != n {
		t.Fatalf("snapshot has %d entries, want %d", len(snap.GetEntries()), n)
	}

	const deltas = 300
	start = time.Now()
	go func() {
		for i := range deltas {
			if _, err := h.st.CreateEntry(ctx, "test", store.Entry{
				SPIFFEID: spiffeid.RequireFromPath(td, fmt.Sprintf("/delta/%d", i)), ParentID: a.ID,
				Selectors: []attestation.Selector{{Type: "unix", Key: "uid", Value: "1"}},
			}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	got := 0
	for got < deltas {
		got += len(recv(t, stream).GetEntries())
	}
	t.Logf("%d entries created one by one all arrived in %v", deltas, time.Since(start))
}

func TestCrossAgent(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	a := h.join(t, "node1")
	b := h.join(t, "node2")
	mine := h.entry(t, store.Entry{SPIFFEID: spiffeid.RequireFromPath(td, "/a/web"), ParentID: a.ID, DNSNames: []string{"web.example.org"}})
	theirs := h.entry(t, store.Entry{SPIFFEID: spiffeid.RequireFromPath(td, "/b/db"), ParentID: b.ID})
	client := h.as(t, a)
	_, csr := newCSR(t)

	t.Run("an agent gets svids only for its own entries in a batch", func(t *testing.T) {
		resp, err := client.SignX509SVIDs(ctx, &agentv1.SignX509SVIDsRequest{Requests: []*agentv1.X509SVIDRequest{
			{EntryId: mine.ID, Csr: csr}, {EntryId: theirs.ID, Csr: csr}, {EntryId: "no-such-entry", Csr: csr}, {EntryId: mine.ID, Csr: []byte("junk")},
		}})
		if err != nil {
			t.Fatal(err)
		}
		rs := resp.GetResults()
		if len(rs) != 4 {
			t.Fatalf("%d results, want 4", len(rs))
		}
		if rs[0].GetError() != "" || len(rs[0].GetCertChain()) == 0 {
			t.Fatalf("own entry: error %q, %d certs", rs[0].GetError(), len(rs[0].GetCertChain()))
		}
		leaf, err := x509.ParseCertificate(rs[0].GetCertChain()[0])
		if err != nil {
			t.Fatal(err)
		}
		if id, _ := x509svid.IDFromCert(leaf); id != mine.SPIFFEID || !slices.Equal(leaf.DNSNames, []string{"web.example.org"}) {
			t.Errorf("own svid: id %s dns %v", id, leaf.DNSNames)
		}
		for i, want := range []string{
			"entry " + theirs.ID + " is not served by this agent",
			"entry no-such-entry is not served by this agent",
		} {
			r := rs[i+1]
			if r.GetError() != want || len(r.GetCertChain()) != 0 {
				t.Errorf("result %d: error %q with %d certs, want %q and none", i+1, r.GetError(), len(r.GetCertChain()), want)
			}
		}
		if rs[3].GetError() == "" || len(rs[3].GetCertChain()) != 0 {
			t.Errorf("junk csr: error %q, %d certs", rs[3].GetError(), len(rs[3].GetCertChain()))
		}
		h.issuedMu.Lock()
		defer h.issuedMu.Unlock()
		if h.issued["x509"] != 1 {
			t.Errorf("OnIssue(x509) called %d times, want 1", h.issued["x509"])
		}
	})

	t.Run("a jwt-svid for another agent's entry is refused", func(t *testing.T) {
		_, err := client.MintJWTSVID(ctx, &agentv1.MintJWTSVIDRequest{EntryId: theirs.ID, Audience: []string{"x"}})
		wantCode(t, "MintJWTSVID for another agent's entry", err, codes.PermissionDenied)
	})

	t.Run("a jwt-svid for its own entry is minted", func(t *testing.T) {
		resp, err := client.MintJWTSVID(ctx, &agentv1.MintJWTSVIDRequest{EntryId: mine.ID, Audience: []string{"x"}})
		if err != nil || resp.GetToken() == "" {
			t.Fatalf("MintJWTSVID: %v", err)
		}
	})

	for _, tt := range []struct {
		name     string
		audience []string
		wantMsg  string
	}{
		{"without audience", nil, "audience is required"},
		{"with an empty audience value", []string{"x", ""}, "audience value 1 is empty"},
		{"with 17 audience values", strings.Split("a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q", ","), "17 audience values; a jwt-svid may name at most 16"},
		{"with a 2 MiB audience value", []string{strings.Repeat("x", 2<<20)}, "audience value 0 is 2097152 bytes; each value must be 1 to 256 bytes"},
		{"with a NUL in an audience value", []string{"admin\x00billing"}, "audience value 0 has the control character U+0000"},
	} {
		t.Run("a jwt-svid "+tt.name+" is an invalid argument", func(t *testing.T) {
			_, err := client.MintJWTSVID(ctx, &agentv1.MintJWTSVIDRequest{EntryId: mine.ID, Audience: tt.audience})
			wantCode(t, "MintJWTSVID "+tt.name, err, codes.InvalidArgument)
			if msg := status.Convert(err).Message(); !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("message %q, want it to contain %q", msg, tt.wantMsg)
			}
		})
	}

	t.Run("a batch over the cap is an invalid argument", func(t *testing.T) {
		reqs := make([]*agentv1.X509SVIDRequest, MaxBatch+1)
		for i := range reqs {
			reqs[i] = &agentv1.X509SVIDRequest{EntryId: mine.ID, Csr: csr}
		}
		_, err := client.SignX509SVIDs(ctx, &agentv1.SignX509SVIDsRequest{Requests: reqs})
		wantCode(t, "SignX509SVIDs over the cap", err, codes.InvalidArgument)
	})

	t.Run("a workload svid is not an agent", func(t *testing.T) {
		wl := h.newSVID(t, mine.SPIFFEID)
		_, err := h.as(t, wl).SignX509SVIDs(ctx, &agentv1.SignX509SVIDsRequest{})
		wantCode(t, "SignX509SVIDs as a workload", err, codes.PermissionDenied)
	})
}

func TestEviction(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	a := h.join(t, "node1")
	client := h.as(t, a)
	stream, err := client.Sync(ctx, &agentv1.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	recv(t, stream)
	if _, err := h.st.EvictAgent(ctx, "test", a.ID); err != nil {
		t.Fatal(err)
	}

	t.Run("the open sync stream ends with permission denied", func(t *testing.T) {
		_, err := stream.Recv()
		wantCode(t, "Sync after eviction", err, codes.PermissionDenied)
		t.Logf("message: %s", status.Convert(err).Message())
	})

	t.Run("renewal is refused", func(t *testing.T) {
		_, csr := newCSR(t)
		_, err := client.RenewAgent(ctx, &agentv1.RenewAgentRequest{Csr: csr})
		wantCode(t, "RenewAgent after eviction", err, codes.PermissionDenied)
	})

	t.Run("a new sync is refused", func(t *testing.T) {
		s, err := client.Sync(ctx, &agentv1.SyncRequest{})
		if err == nil {
			_, err = s.Recv()
		}
		wantCode(t, "Sync after eviction", err, codes.PermissionDenied)
	})

	t.Run("a new token with the same name brings the node back under the same id, and only the new svid works", func(t *testing.T) {
		h.token(t, "node1", "secret-node1-again", time.Now().Add(time.Hour))
		key, req := attestReq(t, "secret-node1-again")
		resp, err := h.anon(t).Attest(ctx, req)
		if err != nil {
			t.Fatalf("Attest again: %v", err)
		}
		again := svidOf(t, resp.GetSvidChain(), key)
		if again.ID != a.ID {
			t.Errorf("re-joined as %s, want %s", again.ID, a.ID)
		}
		s, err := h.as(t, again).Sync(ctx, &agentv1.SyncRequest{})
		if err != nil {
			t.Fatal(err)
		}
		recv(t, s)
		_, csr := newCSR(t)
		_, err = client.RenewAgent(ctx, &agentv1.RenewAgentRequest{Csr: csr})
		wantCode(t, "RenewAgent with the evicted svid", err, codes.PermissionDenied)
	})
}

func TestNoClientCertificate(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.join(t, "node1")
	client := h.anon(t)
	_, csr := newCSR(t)

	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"sync is refused", func() error {
			s, err := client.Sync(ctx, &agentv1.SyncRequest{})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}},
		{"signing is refused", func() error {
			_, err := client.SignX509SVIDs(ctx, &agentv1.SignX509SVIDsRequest{})
			return err
		}},
		{"minting a jwt is refused", func() error {
			_, err := client.MintJWTSVID(ctx, &agentv1.MintJWTSVIDRequest{EntryId: "x", Audience: []string{"x"}})
			return err
		}},
		{"renewal is refused", func() error {
			_, err := client.RenewAgent(ctx, &agentv1.RenewAgentRequest{Csr: csr})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, tc.name, tc.call(), codes.PermissionDenied)
		})
	}
}

func TestRenewAgent(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	old := h.join(t, "node1")
	key, csr := newCSR(t)
	resp, err := h.as(t, old).RenewAgent(ctx, &agentv1.RenewAgentRequest{Csr: csr})
	if err != nil {
		t.Fatal(err)
	}
	renewed := svidOf(t, resp.GetSvidChain(), key)

	t.Run("the new svid has the same id and a new serial", func(t *testing.T) {
		if renewed.ID != old.ID {
			t.Errorf("renewed id = %s, want %s", renewed.ID, old.ID)
		}
		if renewed.Certificates[0].SerialNumber.Cmp(old.Certificates[0].SerialNumber) == 0 {
			t.Error("renewed svid has the old serial")
		}
		a, err := h.st.GetAgent(ctx, old.ID)
		if err != nil {
			t.Fatal(err)
		}
		if a.SerialNumber != renewed.Certificates[0].SerialNumber.Text(16) {
			t.Errorf("stored serial = %s, want the renewed one", a.SerialNumber)
		}
	})

	t.Run("the new svid is accepted", func(t *testing.T) {
		if _, err := h.as(t, renewed).SignX509SVIDs(ctx, &agentv1.SignX509SVIDsRequest{}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("the old svid is then refused", func(t *testing.T) {
		_, err := h.as(t, old).SignX509SVIDs(ctx, &agentv1.SignX509SVIDsRequest{})
		wantCode(t, "SignX509SVIDs with the old svid", err, codes.PermissionDenied)
	})
}
