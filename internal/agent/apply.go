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
	if msg.GetFederatedBundles() != nil {
		a.applyFederatedBundles(msg.GetFederatedBundles())
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
		var fed []spiffeid.TrustDomain
		for _, n := range pe.GetFederatesWith() {
			if td, err := spiffeid.TrustDomainFromString(n); err == nil {
				fed = append(fed, td)
			} else {
				a.log.Warn("entry federates with a bad trust domain name; ignoring it", "entry", pe.GetId(), "error", err)
			}
		}
		entries = append(entries, cache.Entry{
			ID: pe.GetId(), SPIFFEID: id, Selectors: sels, FederatesWith: fed,
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

// applyFederatedBundles takes the federated trust domains' bundles the server sent (all of them: they
// replace those held). A bundle that does not parse is skipped and logged; the rest still apply.
func (a *Agent) applyFederatedBundles(fb *agentv1.FederatedBundles) {
	bs := make(map[spiffeid.TrustDomain]*spiffebundle.Bundle, len(fb.GetBundles()))
	for _, pb := range fb.GetBundles() {
		td, err := spiffeid.TrustDomainFromString(pb.GetTrustDomain())
		if err != nil || td == a.td {
			a.log.Warn("skipping a federated bundle with a bad trust domain", "trust_domain", pb.GetTrustDomain())
			continue
		}
		b, err := spiffebundle.Parse(td, pb.GetSpiffeBundle())
		if err != nil {
			a.log.Warn("skipping a federated bundle that does not parse", "trust_domain", td.Name(), "error", err)
			continue
		}
		bs[td] = b
	}
	a.cache.SetFederatedBundles(bs)
	a.persist.MarkDirty()
}
