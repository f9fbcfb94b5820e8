package agentapi

import "github.com/spiffe/go-spiffe/v2/spiffeid"

// acknowledge records that agent id enforces the authorization data of store revision rev (it said so in
// ReportStatus). Kept in memory: after a restart every agent acknowledges again with its first Sync
// message.
func (s *Service) acknowledge(id spiffeid.ID, rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.acks == nil {
		s.acks = map[spiffeid.ID]int64{}
	}
	s.acks[id] = max(s.acks[id], rev)
}

// Acknowledged is the newest store revision whose authorization data agent id reported enforcing since
// this server started; 0 if none.
func (s *Service) Acknowledged(id spiffeid.ID) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acks[id]
}
