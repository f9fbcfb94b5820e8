package agentapi

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/grpc"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/internal/server/apierr"
	"github.com/kithid/kith/internal/store"
)

// bulkChanges is the number of changed entries in one step above which Sync reads every entry in one
// query instead of each changed entry on its own.
const bulkChanges = 64

// Sync streams the calling agent the entries it serves and the trust bundle.
//
// The first message is a full snapshot (full_snapshot, every served entry, the bundle) unless the request
// names a revision the agent already holds, in which case it is a delta from that revision (still with the
// bundle). After that the stream pushes, as soon as the store commits them, the entries that were added or
// changed and the IDs of those deleted or no longer served, and the bundle whenever the CA changes it.
// Every message carries the store revision it brings the agent to; the agent passes the last one back when
// it reconnects. The stream ends with PermissionDenied when the agent is evicted.
func (s *Service) Sync(req *agentv1.SyncRequest, stream grpc.ServerStreamingServer[agentv1.SyncResponse]) error {
	ctx := stream.Context()
	a, err := s.caller(ctx)
	if err != nil {
		return err
	}
	// Subscribe before reading anything, so no change between the first read and the loop is missed.
	watch, stopWatch := s.cfg.Changes.Watch()
	defer stopWatch()
	caChanged, stopCA := s.cfg.CA.Subscribe()
	defer stopCA()
	defer s.connect(a.ID)()

	sy := &syncer{s: s, agent: a, sels: attestation.NewSet(a.Selectors...), sent: make(map[string]string)}
	first, err := sy.start(ctx, req.GetRevision())
	if err != nil {
		return err
	}
	if first.Bundle, err = bundleProto(s.cfg.CA.Bundle()); err != nil {
		return err
	}
	if first.FederatedBundles, err = s.federatedBundles(ctx); err != nil {
		return err
	}
	if err := sy.addAuthz(ctx, first); err != nil {
		return err
	}
	sy.addPolicy(first)
	if err := stream.Send(first); err != nil {
		return err
	}
	s.cfg.Logger.Debug("agent sync started", "agent_id", a.ID.String(), "revision", first.GetRevision(),
		"full_snapshot", first.GetFullSnapshot(), "entries", len(first.GetEntries()))

	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-watch:
			if !ok {
				return fmt.Errorf("server is shutting down: reconnect to sync again: %w", apierr.ErrUnavailable)
			}
			msg, err := sy.step(ctx)
			if err != nil {
				return err
			}
			if msg != nil {
				if err := stream.Send(msg); err != nil {
					return err
				}
			}
		case <-caChanged:
			b, err := bundleProto(s.cfg.CA.Bundle())
			if err != nil {
				return err
			}
			if err := stream.Send(&agentv1.SyncResponse{Revision: sy.rev, Bundle: b}); err != nil {
				return err
			}
		}
	}
}

// step reads the changes since the revision the agent was brought to and returns the message that brings
// it to the newest one, nil when nothing it holds changed.
func (sy *syncer) step(ctx context.Context) (*agentv1.SyncResponse, error) {
	changes, err := sy.s.cfg.Changes.ChangesSince(ctx, sy.rev)
	if err != nil {
		return nil, fmt.Errorf("sync agent %s: %w", sy.agent.ID, err)
	}
	if len(changes) == 0 {
		return nil, nil
	}
	if store.HistoryLostBelow(changes, sy.rev) {
		// Changes this stream sent are gone from the database: the agent reconnects, and start sends
		// it everything.
		return nil, fmt.Errorf("the store's database went back to an earlier revision: reconnect to sync again: %w", apierr.ErrUnavailable)
	}
	msg, err := sy.apply(ctx, changes)
	if err != nil {
		return nil, err
	}
	if bundlesChanged(changes) {
		if msg == nil {
			msg = &agentv1.SyncResponse{Revision: sy.rev}
		}
		if msg.FederatedBundles, err = sy.s.federatedBundles(ctx); err != nil {
			return nil, err
		}
	}
	if authzRelevant(changes) || policyChanged(changes) {
		if msg == nil {
			msg = &agentv1.SyncResponse{Revision: sy.rev}
		}
		if err := sy.addAuthz(ctx, msg); err != nil {
			return nil, err
		}
		sy.addPolicy(msg)
		if msg.Authz == nil && msg.Policy == nil && msg.FederatedBundles == nil && len(msg.Entries) == 0 && len(msg.DeletedEntryIds) == 0 {
			return nil, nil
		}
	}
	return msg, nil
}

// syncer is the state of one Sync stream.
type syncer struct {
	s     *Service
	agent store.Agent
	sels  attestation.Set
	sent  map[string]string // entry ID → SPIFFE ID of the entries the agent holds
	rev   int64             // the revision the agent has been brought to

	authzSum  [32]byte // digest of the authorization data last sent
	authzSent bool
	policyRev string // policy revision last sent
}

// start returns the first message: a delta from rev when the agent holds a revision this store has
// reached, a full snapshot otherwise.
func (sy *syncer) start(ctx context.Context, from int64) (*agentv1.SyncResponse, error) {
	cur, err := sy.s.cfg.Changes.Revision(ctx)
	if err != nil {
		return nil, fmt.Errorf("sync agent %s: %w", sy.agent.ID, err)
	}
	var changes []store.Change
	if from > 0 && from <= cur {
		if changes, err = sy.s.cfg.Changes.ChangesSince(ctx, from); err != nil {
			return nil, fmt.Errorf("sync agent %s from revision %d: %w", sy.agent.ID, from, err)
		}
	}
	// A database that went back (restored, failed over) took changes the agent holds with it: send everything.
	if from <= 0 || from > cur || store.HistoryLostBelow(changes, from) {
		all, err := sy.s.cfg.Entries.ListEntries(ctx, store.EntryFilter{})
		if err != nil {
			return nil, fmt.Errorf("sync agent %s: %w", sy.agent.ID, err)
		}
		msg := &agentv1.SyncResponse{Revision: cur, FullSnapshot: true, Entries: []*agentv1.Entry{}}
		for _, e := range all {
			if serves(sy.agent, sy.sels, e) {
				msg.Entries = append(msg.Entries, entryProto(e))
				sy.sent[e.ID] = e.SPIFFEID.String()
			}
		}
		sy.rev = cur
		return msg, nil
	}

	all, err := sy.s.cfg.Entries.ListEntries(ctx, store.EntryFilter{})
	if err != nil {
		return nil, fmt.Errorf("sync agent %s: %w", sy.agent.ID, err)
	}
	byID := make(map[string]store.Entry, len(all))
	for _, e := range all {
		byID[e.ID] = e
		if serves(sy.agent, sy.sels, e) {
			sy.sent[e.ID] = e.SPIFFEID.String()
		}
	}
	msg := &agentv1.SyncResponse{Revision: max(cur, lastRevision(changes, from))}
	for _, id := range changedEntries(changes) {
		// What the agent held at from is unknown: an entry it does not serve now is deleted either way.
		if e, ok := byID[id]; ok && serves(sy.agent, sy.sels, e) {
			msg.Entries = append(msg.Entries, entryProto(e))
		} else {
			msg.DeletedEntryIds = append(msg.DeletedEntryIds, id)
		}
	}
	sy.rev = msg.Revision
	return msg, nil
}

// apply turns committed changes into the message for this agent, or nil when none concerns it. It fails
// with PermissionDenied when the agent has been evicted.
func (sy *syncer) apply(ctx context.Context, changes []store.Change) (*agentv1.SyncResponse, error) {
	rev := lastRevision(changes, sy.rev)
	reconcile := false
	for _, c := range changes {
		if c.Kind != store.KindAgent || c.ID != sy.agent.ID.String() {
			continue
		}
		a, err := sy.s.cfg.Agents.GetAgent(ctx, sy.agent.ID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return nil, apierr.Denied(fmt.Sprintf("agent %s no longer exists: it must attest again with a new join token", sy.agent.ID))
		case err != nil:
			return nil, fmt.Errorf("sync agent %s: %w", sy.agent.ID, err)
		case a.Evicted:
			return nil, evicted(a.ID)
		}
		if !slices.Equal(a.Selectors, sy.agent.Selectors) {
			sy.agent, sy.sels, reconcile = a, attestation.NewSet(a.Selectors...), true
		}
		break
	}

	ids := changedEntries(changes)
	var byID map[string]store.Entry
	if reconcile || len(ids) > bulkChanges {
		all, err := sy.s.cfg.Entries.ListEntries(ctx, store.EntryFilter{})
		if err != nil {
			return nil, fmt.Errorf("sync agent %s: %w", sy.agent.ID, err)
		}
		byID = make(map[string]store.Entry, len(all))
		for _, e := range all {
			byID[e.ID] = e
		}
	}
	lookup := func(id string) (store.Entry, bool, error) {
		if byID != nil {
			e, ok := byID[id]
			return e, ok, nil
		}
		e, err := sy.s.cfg.Entries.GetEntry(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return store.Entry{}, false, nil
		}
		return e, err == nil, err
	}

	msg := &agentv1.SyncResponse{Revision: rev}
	done := make(map[string]bool, len(ids))
	for _, id := range ids {
		done[id] = true
		e, ok, err := lookup(id)
		if err != nil {
			return nil, fmt.Errorf("sync agent %s: %w", sy.agent.ID, err)
		}
		sy.put(msg, e, ok && serves(sy.agent, sy.sels, e), id)
	}
	if reconcile {
		// The agent's selectors changed: entries placed by node selectors may have come or gone.
		for id, e := range byID {
			if !done[id] {
				if _, had := sy.sent[id]; !had && serves(sy.agent, sy.sels, e) {
					sy.put(msg, e, true, id)
				}
			}
		}
		for id := range sy.sent {
			if e, ok := byID[id]; !done[id] && (!ok || !serves(sy.agent, sy.sels, e)) {
				sy.put(msg, e, false, id)
			}
		}
	}
	sy.rev = rev
	if len(msg.Entries) == 0 && len(msg.DeletedEntryIds) == 0 {
		return nil, nil
	}
	return msg, nil
}

// put adds e to msg if the agent serves it, or its ID to the deletions if the agent holds it.
func (sy *syncer) put(msg *agentv1.SyncResponse, e store.Entry, served bool, id string) {
	if served {
		msg.Entries = append(msg.Entries, entryProto(e))
		sy.sent[id] = e.SPIFFEID.String()
		return
	}
	if _, had := sy.sent[id]; had {
		msg.DeletedEntryIds = append(msg.DeletedEntryIds, id)
		delete(sy.sent, id)
	}
}

// changedEntries returns the IDs of the entries in changes, each once, in order of first change.
func changedEntries(changes []store.Change) []string {
	seen := make(map[string]bool)
	var ids []string
	for _, c := range changes {
		if c.Kind == store.KindEntry && !seen[c.ID] {
			seen[c.ID] = true
			ids = append(ids, c.ID)
		}
	}
	return ids
}

func bundlesChanged(changes []store.Change) bool {
	for _, c := range changes {
		if c.Kind == store.KindBundle {
			return true
		}
	}
	return false
}

func lastRevision(changes []store.Change, def int64) int64 {
	if len(changes) == 0 {
		return def
	}
	return max(def, changes[len(changes)-1].Revision)
}
