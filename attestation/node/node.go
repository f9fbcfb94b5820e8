// Package node defines node attestation: how a node agent proves to the server what node it runs on
// before it gets an identity.
//
// Each method (join token today; Kubernetes projected service-account tokens next) is a sibling
// package with two halves. The agent half is an [Evidence]: the attestation type and payload the agent
// sends in AgentService.Attest. The server half is an [Attestor]: given that payload it returns the
// agent's SPIFFE ID and node selectors in a [Result], or refuses with a [Refusal]. The server's agent
// API picks the attestor by the request's attestation type, so a new method is a new package
// registered in the server's wiring, not a change to the agent API.
//
// Every agent ID has the form spiffe://<trust domain>/kith/agent/<attestation type>/<node>; [AgentID]
// builds it and [ParseAgentID] reads it back.
package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/attestation"
)

// Attestor is the server half of one node attestation method.
type Attestor interface {
	// PayloadName says what the method's payload is, for the error an agent gets when it sends none,
	// e.g. "the join token secret".
	PayloadName() string
	// Attest verifies payload (never empty) and returns the agent's identity. It returns a *[Refusal]
	// when the payload does not prove a node; the caller audits the refusal and tells the agent only
	// that it was refused. Any other error is the server's own failure.
	//
	// A method that needs a round trip with the agent (a nonce to sign, say) calls challenge; over
	// today's unary AgentService.Attest challenge always returns [ErrNoChallenge].
	Attest(ctx context.Context, payload []byte, challenge Challenge) (Result, error)
}

// Challenge sends a challenge to the attesting agent and returns its response.
type Challenge func(ctx context.Context, challenge []byte) (response []byte, err error)

// ErrNoChallenge is what a [Challenge] returns when the transport carries no challenge round trip:
// AgentService.Attest is one unary call, so an attestor that needs one cannot be served by it yet and
// should return an error wrapping ErrNoChallenge (the agent API answers Unimplemented).
var ErrNoChallenge = errors.New("the agent api's attest call carries no challenge round trip")

// Result is an attested agent.
type Result struct {
	// AgentID is the agent's SPIFFE ID, made with [AgentID].
	AgentID spiffeid.ID
	// Selectors describe the node; entries with node selectors are served by the agents that have them all.
	Selectors []attestation.Selector
	// Attrs describe the attestation in the server's log line, e.g. the join token's ID.
	Attrs []Attr
	// Commit, if set, is called once the agent's SVID is signed, with the agent record to keep; it must
	// record the agent (the method's own bookkeeping, such as redeeming a one-time token, in the same
	// transaction) and may return a *[Refusal] if the attestation no longer holds (the token was used
	// concurrently). A nil Commit means the caller records the agent itself. Nothing is committed
	// when signing fails, so a bad CSR does not use up a one-time credential.
	Commit func(ctx context.Context, agent Agent) error
}

// Agent is the record of an attested agent that a [Result]'s Commit keeps.
type Agent struct {
	ID              spiffeid.ID
	AttestationType string
	Selectors       []attestation.Selector
	SerialNumber    string    // of the agent SVID just signed, hexadecimal
	ExpiresAt       time.Time // of that SVID
}

// Attr is a key and value that describe an attestation or a refusal in the audit log and server log.
type Attr struct{ Key, Value string }

// Refusal is an attestation that did not prove a node. Reason and Attrs go to the audit log and the
// server's log, never to the agent.
type Refusal struct {
	Reason string // e.g. "expired"
	Attrs  []Attr // e.g. the token's ID; an empty value is logged but left out of the audit detail
}

func (r *Refusal) Error() string { return "node attestation refused: " + r.Reason }

// Refuse returns a *Refusal.
func Refuse(reason string, attrs ...Attr) error { return &Refusal{Reason: reason, Attrs: attrs} }

// Evidence is the agent half of one node attestation method: what the agent sends in
// AgentService.Attest.
type Evidence interface {
	// Type is the attestation type, which selects the server's [Attestor], e.g. "join_token".
	Type() string
	// Payload is the attestation payload.
	Payload(ctx context.Context) ([]byte, error)
}

// ReservedPath is the path prefix of Kith's own identities (agents, servers): registration entries and
// minted SVIDs may not use it.
const ReservedPath = "/kith/"

// AgentPath is the path prefix of agent IDs.
const AgentPath = ReservedPath + "agent/"

// AgentID is the SPIFFE ID of the agent on node name attested by method (its attestation type):
// spiffe://td/kith/agent/<method>/<name>. Both must be valid path segments.
func AgentID(td spiffeid.TrustDomain, method, name string) (spiffeid.ID, error) {
	id, err := spiffeid.FromSegments(td, "kith", "agent", method, name)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("agent id for %s node %q: %w", method, name, err)
	}
	return id, nil
}

// ParseAgentID returns the attestation type and node name of an agent ID, and false when id is not
// one (its path is not /kith/agent/<method>/<name>).
func ParseAgentID(id spiffeid.ID) (method, name string, ok bool) {
	rest, ok := strings.CutPrefix(id.Path(), AgentPath)
	if !ok {
		return "", "", false
	}
	method, name, ok = strings.Cut(rest, "/")
	if !ok || method == "" || name == "" || strings.Contains(name, "/") {
		return "", "", false
	}
	return method, name, true
}

// IsAgentID reports whether id is under [AgentPath]: what the agent API accepts as an agent.
func IsAgentID(id spiffeid.ID) bool { return strings.HasPrefix(id.Path(), AgentPath) }
