package store

import "time"

// Policy bundle statuses.
const (
	PolicyOK       = "ok"
	PolicyRejected = "rejected"
)

// PolicyBundle is one policy revision the server built (status ok, with its signed bundle) or refused
// (status rejected, with the error).
type PolicyBundle struct {
	Revision  string
	CreatedAt time.Time
	Status    string
	Error     string
	Bundle    []byte
	Modules   map[string]string
	Active    bool // the revision in force
	Pinned    bool // in force because of a rollback, until the next sync or unpin
}

// AgentPolicy is the policy revision an agent reported it enforces, and since when.
type AgentPolicy struct {
	AgentID  string
	Revision string
	Since    time.Time
	Error    string
}
