package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/svid/cache"
)

// applySync hands a pushed message to the parts: the bundle and entries to the cache, policy bundles and
// authorization data to the policy applier (reporting whether a bundle was refused).
func (a *Agent) applySync(ctx context.Context, msg *agentv1.SyncResponse) error {
	if msg.GetBundle() != nil {
		if err := a.applyBundle(msg.GetBundle()); err != nil {
			return err
		}
	}
	if msg.GetPolicy() != nil {
		errText := ""
		if err := a.policy.ApplyPolicy(ctx, msg.GetPolicy()); err != nil {
			a.log.Error("keeping the current policy", "error", err)
			errText = err.Error()
		}
		a.reporter.Report(errText)
	}
	if msg.GetAuthz() != nil {
		if err := a.policy.ApplyAuthz(ctx, msg.GetAuthz()); err != nil {
			return err
		}
		a.authzRev.Store(msg.GetRevision())
		a.reporter.Acknowledge() // kith grant and revoke count the agents that enforce a change
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
	a.rotation.Poke()
	return nil
}

// applyBundle takes the trust bundle the server sent.
func (a *Agent) applyBundle(pb *agentv1.Bundle) error {
	b, err := spiffebundle.Parse(a.td, pb.GetSpiffeBundle())
	if err != nil {
		return fmt.Errorf("bundle from server: %w", err)
	}
	if cur := a.cache.Bundle(); cur != nil && cur.Equal(b) {
		return nil
	}
	a.cache.SetBundle(b)
	a.persist.MarkDirty()
	return nil
}
