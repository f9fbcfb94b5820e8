package agent

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/protobuf/proto"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/internal/grantpb"
)

// applyAuthz replaces the engine's grants, modes and labels with what the server sent.
func (a *Agent) applyAuthz(ctx context.Context, pd *agentv1.AuthzData) error {
	d := authz.Data{Labels: map[string]map[string]string{}, Modes: map[string]authz.Mode{}}
	for _, pg := range pd.GetGrants() {
		d.Grants = append(d.Grants, grantpb.FromProto(pg))
	}
	for t, m := range pd.GetModes() {
		d.Modes[t] = authz.Mode(m)
	}
	for _, l := range pd.GetLabels() {
		d.Labels[l.GetSpiffeId()] = l.GetLabels()
	}
	if err := a.engine.SetData(ctx, d); err != nil {
		return fmt.Errorf("apply authorization data: %w", err)
	}
	raw, err := proto.Marshal(pd)
	if err != nil {
		return err
	}
	a.authzMu.Lock()
	a.authzRaw = raw
	a.authzMu.Unlock()
	a.markDirty()
	return nil
}

// applyPolicy verifies and activates a policy bundle; a bad one is refused and the current one stays.
// The first signing key the server sends (over the mTLS sync stream) is pinned: later bundles must be
// signed with it.
func (a *Agent) applyPolicy(ctx context.Context, pb *agentv1.PolicyBundle) error {
	a.authzMu.Lock()
	key := a.policyKey
	a.authzMu.Unlock()
	if k := pb.GetPublicKey(); len(k) > 0 {
		if len(key) == 0 {
			key = k
		} else if !bytes.Equal(key, k) {
			return fmt.Errorf("policy bundle %s refused: signed with a key other than the pinned one (remove policy_key from the agent state to accept a new server key)", pb.GetRevision())
		}
	}
	rev, modules := authz.BuiltinRevision, map[string]string{}
	if len(pb.GetBundle()) > 0 {
		var err error
		if rev, modules, err = a.readBundle(pb.GetBundle(), key); err != nil {
			return fmt.Errorf("policy bundle %s refused: %w", pb.GetRevision(), err)
		}
		if rev != pb.GetRevision() {
			return fmt.Errorf("policy bundle refused: manifest revision %q does not match %q", rev, pb.GetRevision())
		}
	}
	if err := a.engine.SetPolicy(ctx, rev, modules); err != nil {
		return fmt.Errorf("policy %s refused: %w", rev, err)
	}
	a.authzMu.Lock()
	a.policyRaw = pb.GetBundle()
	a.policyRev = pb.GetRevision()
	a.policyKey = key
	a.authzMu.Unlock()
	a.log.Info("policy activated", "revision", rev, "modules", len(modules))
	a.markDirty()
	return nil
}

// readBundle unpacks a policy bundle: Config.VerifyBundle when set, else OPA signature verification with
// the pinned key; without a pinned key (a server that does not sign) the bundle is read unverified.
func (a *Agent) readBundle(data, key []byte) (string, map[string]string, error) {
	if a.verifyBundle != nil {
		return a.verifyBundle(data)
	}
	if len(key) > 0 {
		return authz.ReadSignedBundle(data, key)
	}
	return authz.ReadBundle(data)
}

// reportPolicy tells the server which policy revision this agent enforces.
func (a *Agent) reportPolicy(ctx context.Context, c agentv1.AgentServiceClient, errText string) {
	rev := a.PolicyRevision()
	if rev == "" {
		rev = authz.BuiltinRevision
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.ReportStatus(ctx, &agentv1.ReportStatusRequest{PolicyRevision: rev, PolicyError: errText}); err != nil {
		a.log.Debug("report policy status", "error", err)
	}
}

// Engine is the agent's decision engine.
func (a *Agent) Engine() *authz.Engine { return a.engine }

// PolicyRevision is the policy revision the agent enforces.
func (a *Agent) PolicyRevision() string {
	a.authzMu.Lock()
	defer a.authzMu.Unlock()
	return a.policyRev
}

// ValidateJWTSVID validates a bearer JWT-SVID for an audience against the agent's bundle.
func (a *Agent) ValidateJWTSVID(token, audience string) (spiffeid.ID, error) {
	b := a.cache.Bundle()
	if b == nil {
		return spiffeid.ID{}, fmt.Errorf("agent has no bundle yet")
	}
	svid, err := jwtsvid.ParseAndValidate(token, jwtbundle.NewSet(b.JWTBundle()), []string{audience})
	if err != nil {
		return spiffeid.ID{}, err
	}
	return svid.ID, nil
}

// listenAuthz opens the ext_authz listeners: the unix socket (mode 0777: decisions are not secret and the
// proxy may run as any user) and, unless "off", the TCP address.
func listenAuthz(socket, addr string) ([]net.Listener, error) {
	var out []net.Listener
	if socket != "" {
		l, err := listenSocket(socket)
		if err != nil {
			return nil, fmt.Errorf("authz socket %s (authz_socket): %w", socket, err)
		}
		out = append(out, l)
	}
	if addr != "" && addr != "off" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			if socket != "" {
				os.Remove(socket)
			}
			return nil, fmt.Errorf("authz listen %s (authz_listen): %w", addr, err)
		}
		out = append(out, l)
	}
	return out, nil
}
