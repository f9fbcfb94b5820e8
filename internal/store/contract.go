package store

import (
	"context"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/ca"
)

// The interfaces below are what a backend provides, one per concern. Consumers do not take them whole: each
// declares the few methods it calls (adminapi.EntryStore, agentapi.ChangeFeed, ...). Every backend must pass
// the conformance suite in package storetest, which is the precise statement of this contract.
//
// Common rules: every method that changes something is one transaction that bumps the store-wide revision
// exactly once, records one Change per changed object and appends its audit row(s) attributed to actor; a
// failed call changes nothing. Times are returned in UTC, kept to at least the microsecond. Lists are ordered
// bytewise (as Go compares strings), whatever the backend's collation.

// Entries persists registration entries.
type Entries interface {
	// CreateEntry stores e, assigning ID (when empty), CreatedAt, UpdatedAt and Revision. A duplicate of an
	// existing entry (same SPIFFE ID, parent and selector sets) or a taken ID is ErrAlreadyExists.
	CreateEntry(ctx context.Context, actor string, e Entry) (Entry, error)
	// CreateEntries stores es in one transaction with one revision: all or none.
	CreateEntries(ctx context.Context, actor string, es []Entry) ([]Entry, error)
	// UpdateEntry replaces the entry with e.ID (ErrNotFound if none), keeping CreatedAt.
	UpdateEntry(ctx context.Context, actor string, e Entry) (Entry, error)
	// DeleteEntry deletes the entry and returns it as it was; ErrNotFound if none.
	DeleteEntry(ctx context.Context, actor string, id string) (Entry, error)
	GetEntry(ctx context.Context, id string) (Entry, error)
	// ListEntries returns the entries matching f ordered by SPIFFE ID then ID, at most f.Limit of them
	// after f.After.
	ListEntries(ctx context.Context, f EntryFilter) ([]Entry, error)
}

// Tokens persists join tokens.
type Tokens interface {
	// CreateJoinToken stores t (ID assigned when empty, CreatedAt set). A Name still standing for an unused,
	// unexpired token or for an agent that is not evicted is ErrAlreadyExists.
	CreateJoinToken(ctx context.Context, actor string, t JoinToken) (JoinToken, error)
	// ListJoinTokens returns every token, oldest first.
	ListJoinTokens(ctx context.Context) ([]JoinToken, error)
	// LookupJoinToken returns the token whose secret hashes to hash, used or not; ErrTokenInvalid if none.
	LookupJoinToken(ctx context.Context, hash []byte) (JoinToken, error)
	// UseJoinToken redeems the token and records the agent in one transaction; ErrTokenInvalid for a token
	// that is unknown, used or expired at now.
	UseJoinToken(ctx context.Context, hash []byte, now time.Time, agent Agent) (JoinToken, Agent, error)
	// RevokeJoinToken deletes the unused token id (expired or not) and returns it as it was, so that its
	// secret is from then on unknown; ErrNotFound if none, ErrFailedPrecondition if it was used.
	RevokeJoinToken(ctx context.Context, actor, id string) (JoinToken, error)
}

// Agents persists attested agents.
type Agents interface {
	// UpsertAgent inserts or replaces a (CreatedAt and Banned kept, UpdatedAt set) with an audit row for
	// action.
	UpsertAgent(ctx context.Context, actor, action string, a Agent) (Agent, error)
	GetAgent(ctx context.Context, id spiffeid.ID) (Agent, error)
	// ListAgents returns every agent, evicted or not, ordered by ID.
	ListAgents(ctx context.Context) ([]Agent, error)
	// EvictAgent marks the agent evicted; ErrNotFound if none.
	EvictAgent(ctx context.Context, actor string, id spiffeid.ID) (Agent, error)
	// BanAgent marks the agent banned and evicted; UnbanAgent clears the ban (it stays evicted until it
	// attests again). ErrNotFound if none.
	BanAgent(ctx context.Context, actor string, id spiffeid.ID) (Agent, error)
	UnbanAgent(ctx context.Context, actor string, id spiffeid.ID) (Agent, error)
}

// Grants persists authorization grants.
type Grants interface {
	// CreateGrant stores g (ID assigned when empty, CreatedAt set).
	CreateGrant(ctx context.Context, actor string, g grant.Grant) (grant.Grant, error)
	// ReplaceGrantsFromSource replaces every grant whose Source starts with prefix by grants, in one
	// transaction with a grant.sync audit row whose target is source (the commit, e.g. "git:<sha>").
	ReplaceGrantsFromSource(ctx context.Context, actor, prefix, source string, grants []grant.Grant) error
	// DeleteGrant removes the grant and returns it; ErrNotFound if none.
	DeleteGrant(ctx context.Context, actor, id string) (grant.Grant, error)
	GetGrant(ctx context.Context, id string) (grant.Grant, error)
	// ListGrants returns the grants ordered by target, caller and ID, at most f.Limit of them after f.After.
	ListGrants(ctx context.Context, f GrantFilter) ([]grant.Grant, error)
}

// Modes persists the enforcement mode of targets.
type Modes interface {
	// SetTargetMode sets the mode of target; ModeEnforce removes it.
	SetTargetMode(ctx context.Context, actor, target string, mode grant.Mode) error
	// TargetModes returns the targets not in enforce mode.
	TargetModes(ctx context.Context) (map[string]grant.Mode, error)
}

// Policies persists the history of policy bundles and which one is in force.
type Policies interface {
	// RecordPolicy appends an attempt; an ok bundle with activate set becomes the active one.
	RecordPolicy(ctx context.Context, actor string, p PolicyBundle, activate bool) error
	// ActivatePolicy makes an earlier ok revision active again; ErrNotFound if there is none.
	ActivatePolicy(ctx context.Context, actor, revision string, pinned bool) (PolicyBundle, error)
	// UnpinPolicy ends a rollback: the newest ok revision becomes active, not pinned, with one policy.unpin
	// audit row, and unpinned is true. When nothing is pinned it changes nothing, writes no audit row and
	// returns the active bundle (zero if none).
	UnpinPolicy(ctx context.Context, actor string) (p PolicyBundle, unpinned bool, err error)
	// ActivePolicy returns the active bundle; ErrNotFound if none.
	ActivePolicy(ctx context.Context) (PolicyBundle, error)
	// PolicyHistory returns the newest limit attempts (50 when limit <= 0), newest first, without bundle
	// bytes and modules.
	PolicyHistory(ctx context.Context, limit int) ([]PolicyBundle, error)
}

// PolicyReports persists the policy revision each agent reports it enforces. Reports are not changes:
// they bump no revision and write no audit row.
type PolicyReports interface {
	SetAgentPolicy(ctx context.Context, agentID, revision, errText string) error
	// AgentPolicies returns every report ordered by agent ID.
	AgentPolicies(ctx context.Context) ([]AgentPolicy, error)
}

// RepositoryLabels keeps the identity labels (SPIFFE ID → labels) a policy repository's data file
// supplies, so that a restarted server applies them again. They are replaced as a whole with each commit
// applied and, like reports, are not changes: they bump no revision and write no audit row (the commit's
// policy.activate row covers them).
type RepositoryLabels interface {
	SetPolicyLabels(ctx context.Context, labels map[string]map[string]string) error
	// PolicyLabels returns the labels last set; empty, not nil, if none.
	PolicyLabels(ctx context.Context) (map[string]map[string]string, error)
}

// Users persists people: users, their enrolment codes, their logins and their access requests. Renewing a
// login is not a change: it bumps no revision and writes no audit row (the login's creation is audited).
type Users interface {
	// CreateUser stores u (Source "cli" when empty) with a user.create audit row; ErrAlreadyExists if the
	// name is taken.
	CreateUser(ctx context.Context, actor string, u User) (User, error)
	// UpdateUser replaces the labels, roles and disabled flag of the user u.Name (ErrNotFound if none), with
	// an audit row for action (user.disable, user.enable, user.update).
	UpdateUser(ctx context.Context, actor, action string, u User) (User, error)
	// GetUser returns the user; ErrNotFound if none.
	GetUser(ctx context.Context, name string) (User, error)
	// ListUsers returns every user ordered by name.
	ListUsers(ctx context.Context) ([]User, error)
	// CreateEnrolmentCode stores c (ID assigned when empty, CreatedAt set) with a user.code audit row;
	// ErrNotFound if its user does not exist.
	CreateEnrolmentCode(ctx context.Context, actor string, c EnrolmentCode) (EnrolmentCode, error)
	// UseEnrolmentCode redeems the code whose secret hashes to hash and creates login l for its user, in one
	// transaction with a user.login audit row whose actor is userPrefix followed by the user's name (the
	// user's SPIFFE ID): ErrCodeInvalid for a code that is unknown, used or expired at now,
	// ErrFailedPrecondition when its user is disabled. l.User is set from the code.
	UseEnrolmentCode(ctx context.Context, userPrefix string, hash []byte, now time.Time, l Login) (EnrolmentCode, Login, error)
	// CreateLogin stores l (ID assigned when empty, CreatedAt set) with a user.login audit row.
	CreateLogin(ctx context.Context, actor string, l Login) (Login, error)
	// GetLogin returns the login; ErrNotFound if none.
	GetLogin(ctx context.Context, id string) (Login, error)
	// RenewLogin replaces the login's serial oldSerial by newSerial at now: ErrNotFound if none,
	// ErrFailedPrecondition if its serial is no longer oldSerial (an older certificate) or it expired.
	RenewLogin(ctx context.Context, id, oldSerial, newSerial string, now time.Time) (Login, error)
	// CreateAccessRequest stores r (ID assigned when empty, State pending, CreatedAt set) with a
	// request.create audit row.
	CreateAccessRequest(ctx context.Context, actor string, r AccessRequest) (AccessRequest, error)
	// GetAccessRequest returns the request; ErrNotFound if none.
	GetAccessRequest(ctx context.Context, id string) (AccessRequest, error)
	// ListAccessRequests returns every request, newest first.
	ListAccessRequests(ctx context.Context) ([]AccessRequest, error)
	// DecideAccessRequest approves (g non-nil: the grant is created in the same transaction) or denies the
	// pending request id, with a request.approve or request.deny audit row: ErrNotFound if none,
	// ErrFailedPrecondition if it is no longer pending.
	DecideAccessRequest(ctx context.Context, actor, id, reason string, g *grant.Grant) (AccessRequest, error)
}

// Federations persists the bundles of other trust domains and the relationships the server refreshes them
// from.
type Federations interface {
	// PutBundle inserts or replaces the bundle of b.TrustDomain (UpdatedAt and Revision set) with an audit
	// row for action (bundle.set, bundle.refresh). The own trust domain is refused by the caller.
	PutBundle(ctx context.Context, actor, action string, b FederatedBundle) (FederatedBundle, error)
	// DeleteBundle deletes the bundle and returns it as it was; ErrNotFound if none.
	DeleteBundle(ctx context.Context, actor string, td spiffeid.TrustDomain) (FederatedBundle, error)
	// ListBundles returns every federated bundle ordered by trust domain.
	ListBundles(ctx context.Context) ([]FederatedBundle, error)
	// PutFederation creates (create true: ErrAlreadyExists if one exists) or replaces (ErrNotFound if none)
	// the relationship, and stores first as its bundle in the same transaction when it is not nil.
	PutFederation(ctx context.Context, actor string, create bool, f Federation, first *FederatedBundle) (Federation, error)
	// DeleteFederation deletes the relationship (its bundle stays until deleted) and returns it as it was;
	// ErrNotFound if none.
	DeleteFederation(ctx context.Context, actor string, td spiffeid.TrustDomain) (Federation, error)
	// ListFederations returns every relationship with its status, ordered by trust domain.
	ListFederations(ctx context.Context) ([]Federation, error)
	// SetFederationStatus records how a refresh went. Like reports it bumps no revision and writes no
	// audit row; ErrNotFound if the relationship is gone.
	SetFederationStatus(ctx context.Context, td spiffeid.TrustDomain, st FederationStatus) error
}

// Audit is the append-only, hash-chained audit log.
type Audit interface {
	// Audit appends an event that changes nothing else (its Revision is 0).
	Audit(ctx context.Context, actor, action, target string, detail any) error
	// ListAudit returns events in Seq order.
	ListAudit(ctx context.Context, f AuditFilter) ([]AuditEvent, error)
	// VerifyAudit recomputes the chain and reports the first row that does not fit.
	VerifyAudit(ctx context.Context) (AuditVerification, error)
}

// Health is the backend checking itself, for readiness and `kith store check`.
type Health interface {
	// Probe is a cheap read that touches every table (its newest rows); an error means the store cannot
	// read. It honours ctx's deadline.
	Probe(ctx context.Context) error
	// Check runs the backend's integrity check now and returns what it ran and the problems it found (none:
	// intact). It may read the whole database.
	Check(ctx context.Context) (check string, problems []string, err error)
}

// Feed tells consumers what changed.
type Feed interface {
	// Revision is the number of change transactions committed so far.
	Revision(ctx context.Context) (int64, error)
	// ChangesSince returns every change with a revision greater than rev, in commit order.
	ChangesSince(ctx context.Context, rev int64) ([]Change, error)
	// Watch sends each committed revision on a channel that holds one value and coalesces (a slow reader
	// finds only the newest), before the call that committed it returns. Calls that change nothing send
	// nothing. The returned func unsubscribes and closes the channel; Close closes it too.
	Watch() (<-chan int64, func())
}

// Backend is a whole store: what the server opens and the conformance suite tests. Close closes every
// Watch channel and may be called more than once.
type Backend interface {
	Entries
	Tokens
	Agents
	Grants
	Modes
	Policies
	PolicyReports
	RepositoryLabels
	Users
	Federations
	Audit
	Feed
	Health
	ca.AuthorityStore
	Close() error
}
