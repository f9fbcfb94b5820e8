package agentapi

import (
	"slices"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
)

// streamState is what one Sync stream tells Enforcement: how far it has brought its agent, and the
// revision of the last authorization data it sent.
type streamState struct {
	processed atomic.Int64 // the store revision the stream has read the changes up to
	authz     atomic.Int64 // revision of the last message that carried authorization data
}

// sent records a message sent on the stream. authz is stored before processed (in reached), so that a
// reader who sees processed ≥ r also sees the authorization data sent for r.
func (st *streamState) sent(msg *agentv1.SyncResponse) {
	if msg.GetAuthz() != nil {
		st.authz.Store(msg.GetRevision())
	}
	st.reached(msg.GetRevision())
}

func (st *streamState) reached(rev int64) {
	if rev > st.processed.Load() {
		st.processed.Store(rev)
	}
}

// track registers the state of a new Sync stream of agent id; the newest stream of an agent counts.
func (s *Service) track(id spiffeid.ID) *streamState {
	st := &streamState{}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streams == nil {
		s.streams = map[spiffeid.ID]*streamState{}
	}
	s.streams[id] = st
	return st
}

func (s *Service) untrack(id spiffeid.ID, st *streamState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streams[id] == st {
		delete(s.streams, id)
	}
}

// acknowledge records that agent id enforces the authorization data of revision rev.
func (s *Service) acknowledge(id spiffeid.ID, rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.acks == nil {
		s.acks = map[spiffeid.ID]int64{}
	}
	s.acks[id] = max(s.acks[id], rev)
}

// Enforcement sorts the connected agents by whether they enforce the authorization data of store
// revision rev: acknowledged (the agent reported applying rev or later), pending (sent new authorization
// data at rev or later, not yet acknowledged), undecided (its stream has not read the changes up to rev:
// it may still be sent some). Agents whose data rev did not change are in none. Each list is sorted.
func (s *Service) Enforcement(rev int64) (acknowledged, pending, undecided []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, st := range s.streams {
		// Read authz before processed: a stream stores them in the other order.
		authz, processed := st.authz.Load(), st.processed.Load()
		switch {
		case s.acks[id] >= rev && authz >= rev:
			acknowledged = append(acknowledged, id.String())
		case authz >= rev:
			pending = append(pending, id.String())
		case processed < rev:
			undecided = append(undecided, id.String())
		}
	}
	slices.Sort(acknowledged)
	slices.Sort(pending)
	slices.Sort(undecided)
	return acknowledged, pending, undecided
}
