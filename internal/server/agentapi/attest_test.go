package agentapi

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/node"
	"github.com/kithid/kith/internal/store"
)

// passwordNode is a second node attestation method, known only to this test and registered through the
// node.Attestor contract: the payload "<node>:<password>" proves the node when the password is right.
type passwordNode struct{ password string }

var _ node.Attestor = passwordNode{}

const passwordType = "password"

func (passwordNode) PayloadName() string { return "the node name and password" }

func (p passwordNode) Attest(_ context.Context, payload []byte, _ node.Challenge) (node.Result, error) {
	name, pw, _ := strings.Cut(string(payload), ":")
	if pw != p.password {
		return node.Result{}, node.Refuse("wrong password", node.Attr{Key: "node", Value: name})
	}
	id, err := node.AgentID(td, passwordType, name)
	if err != nil {
		return node.Result{}, node.Refuse("bad node name", node.Attr{Key: "node", Value: name})
	}
	return node.Result{
		AgentID:   id,
		Selectors: []attestation.Selector{{Type: passwordType, Key: "node", Value: name}},
		Attrs:     []node.Attr{{Key: "node", Value: name}},
	}, nil
}

// challenging is a method that needs a challenge round trip, which the unary Attest call cannot carry.
type challenging struct{}

func (challenging) PayloadName() string { return "anything" }

func (challenging) Attest(ctx context.Context, _ []byte, challenge node.Challenge) (node.Result, error) {
	if _, err := challenge(ctx, []byte("nonce")); err != nil {
		return node.Result{}, fmt.Errorf("challenge: %w", err)
	}
	return node.Result{}, fmt.Errorf("unreachable: the challenge was answered")
}

func lastAudit(t *testing.T, h *harness) (store.AuditEvent, map[string]any) {
	t.Helper()
	evs, err := h.st.ListAudit(context.Background(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	last := evs[len(evs)-1]
	var detail map[string]any
	if err := json.Unmarshal([]byte(last.Detail), &detail); err != nil {
		t.Fatalf("audit detail %q: %v", last.Detail, err)
	}
	return last, detail
}

func TestASecondNodeAttestorAttestsThroughTheContract(t *testing.T) {
	h := newHarnessWith(t, map[string]node.Attestor{passwordType: passwordNode{password: "pw"}, "challenge": challenging{}})
	ctx := context.Background()
	client := h.anon(t)
	want := spiffeid.RequireFromPath(td, "/kith/agent/password/edge1")

	t.Run("the right password gives the agent its svid and record", func(t *testing.T) {
		key, csr := newCSR(t)
		resp, err := client.Attest(ctx, &agentv1.AttestRequest{AttestationType: passwordType, Payload: []byte("edge1:pw"), Csr: csr})
		if err != nil {
			t.Fatal(err)
		}
		svid := svidOf(t, resp.GetSvidChain(), key)
		if svid.ID != want || resp.GetAgentId() != want.String() {
			t.Fatalf("agent id %s (svid %s), want %s", resp.GetAgentId(), svid.ID, want)
		}
		a, err := h.st.GetAgent(ctx, want)
		if err != nil {
			t.Fatal(err)
		}
		got := []string{a.AttestationType, a.SerialNumber}
		wantRec := []string{passwordType, svid.Certificates[0].SerialNumber.Text(16)}
		if diff := cmp.Diff(wantRec, got); diff != "" {
			t.Errorf("agent record type and serial (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"password:node:edge1"}, attestation.Strings(a.Selectors)); diff != "" {
			t.Errorf("agent selectors (-want +got):\n%s", diff)
		}

		// The node selectors it attested with choose the entries it serves.
		e := h.entry(t, store.Entry{SPIFFEID: spiffeid.RequireFromPath(td, "/edge/app"),
			NodeSelectors: []attestation.Selector{{Type: passwordType, Key: "node", Value: "edge1"}}})
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := h.as(t, svid).Sync(sctx, &agentv1.SyncRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{e.ID}, entryIDs(recv(t, stream).GetEntries())); diff != "" {
			t.Errorf("synced entries (-want +got):\n%s", diff)
		}
	})

	t.Run("a wrong password is refused and audited with the attestor's detail", func(t *testing.T) {
		_, csr := newCSR(t)
		_, err := client.Attest(ctx, &agentv1.AttestRequest{AttestationType: passwordType, Payload: []byte("edge2:guess"), Csr: csr})
		wantCode(t, "Attest with a wrong password", err, codes.PermissionDenied)
		ev, detail := lastAudit(t, h)
		if ev.Action != "agent.attest.refused" || ev.Actor != "agent:unauthenticated" {
			t.Errorf("last audit event = %s by %s, want agent.attest.refused by agent:unauthenticated", ev.Action, ev.Actor)
		}
		if diff := cmp.Diff(map[string]any{"reason": "wrong password", "node": "edge2"}, detail); diff != "" {
			t.Errorf("audit detail (-want +got):\n%s", diff)
		}
	})

	t.Run("an empty payload names what the method expects", func(t *testing.T) {
		_, csr := newCSR(t)
		_, err := client.Attest(ctx, &agentv1.AttestRequest{AttestationType: passwordType, Csr: csr})
		wantCode(t, "Attest without payload", err, codes.InvalidArgument)
		if got := status.Convert(err).Message(); got != "payload is required: the node name and password" {
			t.Errorf("message = %q", got)
		}
	})

	t.Run("an unknown type lists every supported type", func(t *testing.T) {
		_, req := attestReq(t, "x")
		req.AttestationType = "tpm"
		_, err := client.Attest(ctx, req)
		wantCode(t, "Attest with type tpm", err, codes.InvalidArgument)
		want := `attestation type "tpm" is not supported: use one of "challenge", "join_token", "password"`
		if got := status.Convert(err).Message(); got != want {
			t.Errorf("message = %q, want %q", got, want)
		}
	})

	t.Run("a method that needs a challenge round trip is unimplemented over the unary call", func(t *testing.T) {
		_, csr := newCSR(t)
		_, err := client.Attest(ctx, &agentv1.AttestRequest{AttestationType: "challenge", Payload: []byte("x"), Csr: csr})
		wantCode(t, "Attest needing a challenge", err, codes.Unimplemented)
	})
}

func TestJoinTokenRefusalsAreAudited(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	client := h.anon(t)
	tok := h.token(t, "node1", "s1", time.Now().Add(time.Hour))
	if _, err := client.Attest(ctx, mustReq(t, "s1")); err != nil {
		t.Fatal(err)
	}
	h.token(t, "node2", "s2", time.Now().Add(time.Minute))
	expired := mustLookup(t, h, "s2")
	revoked := h.token(t, "node3", "s3", time.Now().Add(time.Hour))
	if _, err := h.st.RevokeJoinToken(ctx, "test", revoked.ID); err != nil {
		t.Fatal(err)
	}
	h.clock.advance(2 * time.Minute)
	defer h.clock.advance(-2 * time.Minute)

	tests := []struct {
		name, secret string
		want         map[string]any
	}{
		{name: "a used token", secret: "s1", want: map[string]any{"reason": "already used", "token_id": tok.ID}},
		{name: "an expired token", secret: "s2", want: map[string]any{"reason": "expired", "token_id": expired.ID}},
		{name: "an unknown token, with no token id", secret: "never", want: map[string]any{"reason": "unknown"}},
		{name: "a revoked token, exactly like an unknown one", secret: "s3", want: map[string]any{"reason": "unknown"}},
	}
	for _, tt := range tests {
		t.Run(tt.name+" is refused without saying why, and audited with the reason", func(t *testing.T) {
			_, err := client.Attest(ctx, mustReq(t, tt.secret))
			wantCode(t, "Attest", err, codes.PermissionDenied)
			if got := status.Convert(err).Message(); got != "join token is unknown, already used or expired" {
				t.Errorf("message = %q", got)
			}
			ev, detail := lastAudit(t, h)
			if ev.Action != "agent.attest.refused" {
				t.Errorf("last audit action = %s, want agent.attest.refused", ev.Action)
			}
			if diff := cmp.Diff(tt.want, detail); diff != "" {
				t.Errorf("audit detail (-want +got):\n%s", diff)
			}
		})
	}
}

func mustReq(t *testing.T, secret string) *agentv1.AttestRequest {
	t.Helper()
	_, req := attestReq(t, secret)
	return req
}

// Agents racing with one token: exactly one joins, the others are refused (the token is redeemed in the
// transaction that records the agent, after signing).
func TestAJoinTokenUsedConcurrentlyJoinsOneAgent(t *testing.T) {
	h := newHarness(t)
	h.token(t, "node1", "s1", time.Now().Add(time.Hour))
	client := h.anon(t)
	const n = 8
	reqs := make([]*agentv1.AttestRequest, n)
	for i := range reqs {
		reqs[i] = mustReq(t, "s1")
	}
	codesSeen := make([]codes.Code, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, err := client.Attest(context.Background(), reqs[i])
			codesSeen[i] = status.Code(err)
		})
	}
	wg.Wait()
	count := map[codes.Code]int{}
	for _, c := range codesSeen {
		count[c]++
	}
	if diff := cmp.Diff(map[codes.Code]int{codes.OK: 1, codes.PermissionDenied: n - 1}, count); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
}

// A banned agent is refused when it attests again, even with a fresh token for its name (and so its agent
// ID), like any refused attestation; the token stays unused. Once unbanned, the same token joins it.
func TestABannedAgentIsRefusedUntilUnbanned(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	client := h.anon(t)
	h.token(t, "node1", "s1", time.Now().Add(time.Hour))
	resp, err := client.Attest(ctx, mustReq(t, "s1"))
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromString(resp.GetAgentId())
	if _, err := h.st.BanAgent(ctx, "test", id); err != nil {
		t.Fatal(err)
	}
	fresh := h.token(t, "node1", "s2", time.Now().Add(time.Hour))

	_, err = client.Attest(ctx, mustReq(t, "s2"))
	wantCode(t, "Attest of a banned agent", err, codes.PermissionDenied)
	if got := status.Convert(err).Message(); got != "join token is unknown, already used or expired" {
		t.Errorf("message = %q, want the one every refusal gets", got)
	}
	ev, detail := lastAudit(t, h)
	if ev.Action != "agent.attest.refused" {
		t.Errorf("last audit action = %s, want agent.attest.refused", ev.Action)
	}
	if diff := cmp.Diff(map[string]any{"reason": "agent is banned", "agent_id": id.String(), "token_id": fresh.ID}, detail); diff != "" {
		t.Errorf("audit detail (-want +got):\n%s", diff)
	}
	if tok := mustLookup(t, h, "s2"); !tok.UsedAt.IsZero() {
		t.Errorf("the token of a refused banned agent was used at %v", tok.UsedAt)
	}

	if _, err := h.st.UnbanAgent(ctx, "test", id); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Attest(ctx, mustReq(t, "s2")); err != nil {
		t.Fatalf("Attest after unban: %v", err)
	}
	a, err := h.st.GetAgent(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if a.Banned || a.Evicted {
		t.Errorf("agent after unban and attest: banned %v, evicted %v; want neither", a.Banned, a.Evicted)
	}
}
