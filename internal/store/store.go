// Package store defines what Kith persists: registration entries, agents, join tokens, CA authorities and
// the hash-chained audit log. Every change is one transaction with its audit row and bumps the store-wide
// revision. The contract a backend implements is Backend, one small interface per concern (contract.go),
// stated precisely by the conformance suite in storetest; backends live in sub-packages (sqlite is the
// embedded default).
package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/ca"
)

// Sentinel errors that callers branch on.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	// ErrFailedPrecondition is a change the object's state does not allow, such as revoking a used token.
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrTokenInvalid covers an unknown, used or expired join token; the caller must not learn which.
	ErrTokenInvalid = errors.New("join token is unknown, already used or expired")
	// ErrSchemaTooNew is returned when the database was written by a newer Kith.
	ErrSchemaTooNew = errors.New("store schema is newer than this binary")
)

// Entry is a registration entry: the SPIFFE ID a workload gets when its attested selectors include all of
// the entry's selectors, on an agent that is the entry's parent or whose node selectors include all of the
// entry's node selectors.
type Entry struct {
	ID            string // assigned by the store (UUID) when empty on create
	SPIFFEID      spiffeid.ID
	ParentID      spiffeid.ID // zero when the entry is placed by node selectors
	NodeSelectors []attestation.Selector
	Selectors     []attestation.Selector
	X509TTL       time.Duration // zero means the server default
	JWTTTL        time.Duration // zero means the server default
	DNSNames      []string
	Labels        map[string]string
	CreatedAt     time.Time
	UpdatedAt     time.Time
	Revision      int64 // store revision of the last change to this entry
	// FederatesWith are the other trust domains whose bundles the entry's workloads also receive.
	FederatesWith []spiffeid.TrustDomain
	// Source says where the entry comes from: "cli" (the default: the admin API) or "k8s:<resource>" (the
	// Kubernetes controller keeps it; the admin API refuses to change or delete it).
	Source string
}

// EntryFilter narrows ListEntries. Zero fields do not filter.
type EntryFilter struct {
	SPIFFEID spiffeid.ID
	ParentID spiffeid.ID
	// SourcePrefix keeps the entries whose Source starts with it ("k8s:").
	SourcePrefix string
	// SPIFFEIDPrefix keeps the entries whose SPIFFE ID starts with it (bytewise), such as
	// "spiffe://td/ns/prod/": what a grant pattern "spiffe://td/ns/prod/*" covers.
	SPIFFEIDPrefix string
	// Name keeps the entries known by a short name: their SPIFFE ID's path ends in "/"+Name, Name being one
	// or more whole path segments ("payments", "sa/payments"). Backends find them by an index on the last
	// segment, not by reading every entry.
	Name string
	// After keeps the entries after this one in list order (SPIFFE ID, then ID): the last entry of the
	// previous page. Zero: from the first.
	After EntryKey
	// Limit returns at most this many entries; 0 means no limit.
	Limit int
}

// EntryKey is an entry's place in list order, for paging.
type EntryKey struct {
	SPIFFEID string
	ID       string
}

// Key returns e's place in list order.
func (e Entry) Key() EntryKey { return EntryKey{SPIFFEID: e.SPIFFEID.String(), ID: e.ID} }

// GrantFilter pages ListGrants. The zero filter returns every grant.
type GrantFilter struct {
	// After keeps the grants after this one in list order (target, caller, ID): the last grant of the
	// previous page. Zero: from the first.
	After GrantKey
	// Limit returns at most this many grants; 0 means no limit.
	Limit int
}

// GrantKey is a grant's place in list order, for paging.
type GrantKey struct {
	Target, Caller, ID string
}

// JoinToken is a one-time secret an agent presents to attest its node. Only the SHA-256 of the secret is
// stored.
type JoinToken struct {
	ID        string // short public identifier, shown in lists and audit
	Name      string // operator-chosen name; the agent joins as .../join_token/<name or id>
	Hash      []byte // SHA-256 of the secret
	CreatedAt time.Time
	ExpiresAt time.Time
	UsedAt    time.Time // zero while unused
	UsedBy    spiffeid.ID
}

// Agent is an attested node agent.
type Agent struct {
	ID              spiffeid.ID
	AttestationType string // e.g. join_token
	Selectors       []attestation.Selector
	SerialNumber    string // serial of the agent SVID it currently holds (hex)
	ExpiresAt       time.Time
	CreatedAt       time.Time
	UpdatedAt       time.Time
	Evicted         bool
	Banned          bool // refused attestation until unbanned; a banned agent is also evicted
}

// AuditEvent is one row of the append-only, hash-chained audit log.
type AuditEvent struct {
	Seq      int64
	Time     time.Time
	Actor    string // who did it: "cli:uid=1000", "agent:spiffe://...", "system"
	Action   string // e.g. entry.create, token.create, ca.rotate, agent.attest.refused
	Target   string // what it was done to
	Detail   string // JSON object with the specifics
	Revision int64  // store revision the change produced (0 for events that changed nothing)
	PrevHash []byte
	Hash     []byte
}

// AuditFilter narrows ListAudit.
type AuditFilter struct {
	AfterSeq    int64     // only events with Seq > AfterSeq
	BeforeSeq   int64     // 0: no bound; else only events with Seq < BeforeSeq (paging newest first)
	Limit       int       // 0 means no limit; with NewestFirst, the newest Limit events
	NewestFirst bool      // Seq descending instead of ascending
	Since       time.Time // zero: no bound; else only events with Time at or after it
}

// AuditVerification is the result of checking the audit chain.
type AuditVerification struct {
	Count    int64 // rows checked
	OK       bool
	BrokenAt int64  // first row whose hash does not match, when !OK
	Problem  string // what is wrong at BrokenAt
	HeadHash []byte // hash of the last row
}

// ChangeKind names the kind of object a Change is about.
type ChangeKind string

// Kinds of change.
const (
	KindEntry     ChangeKind = "entry"
	KindAgent     ChangeKind = "agent"
	KindAuthority ChangeKind = "authority"
	KindToken     ChangeKind = "token"
	KindGrant     ChangeKind = "grant"
	KindMode      ChangeKind = "mode"
	KindPolicy    ChangeKind = "policy"
	KindUser      ChangeKind = "user"
	KindEnrolment ChangeKind = "enrolment"
	KindLogin     ChangeKind = "login"
	KindRequest   ChangeKind = "request"
	// KindBundle is a federated trust domain's bundle (its ID is the trust domain name).
	KindBundle ChangeKind = "bundle"
	// KindFederation is a federation relationship (its ID is the trust domain name).
	KindFederation ChangeKind = "federation"
	// KindHistory records that the database went back (restored from a backup, or failed over to a replica
	// without the last commits): its ID is the last revision kept (decimal). Revisions after it that a
	// reader saw before are gone, and the same numbers may now name other changes: a reader that holds
	// such a revision must read everything again rather than the changes since it.
	KindHistory ChangeKind = "history"
)

// HistoryLostBelow reports whether changes hold a KindHistory record whose kept revision is below rev: a
// reader at rev holds changes that are gone.
func HistoryLostBelow(changes []Change, rev int64) bool {
	for _, c := range changes {
		if c.Kind != KindHistory {
			continue
		}
		kept, err := strconv.ParseInt(c.ID, 10, 64)
		if err != nil || kept < rev {
			return true
		}
	}
	return false
}

// Change records that one object changed at a revision. Consumers read the object itself to see its state.
type Change struct {
	Revision int64
	Kind     ChangeKind
	ID       string
	Deleted  bool
}

// Authority re-exports the CA's persisted authority record.
type Authority = ca.Authority

// auditLister is the part of Audit that CheckHead reads.
type auditLister interface {
	ListAudit(ctx context.Context, f AuditFilter) ([]AuditEvent, error)
}

// CheckHead compares a log whose chain verified (v, read after the head was taken) with a head recorded
// elsewhere: count events ending in hash. Rows removed from the end leave a chain that verifies; only such
// a head shows it. It returns the first seq that does not match and why, or 0 and "" when the log still
// reaches the head.
func CheckHead(ctx context.Context, a auditLister, count int64, hash []byte, v AuditVerification) (int64, string, error) {
	switch {
	case count <= 0:
		return 0, "", nil
	case v.Count < count:
		missing := fmt.Sprintf("events %d to %d were removed from the end", v.Count+1, count)
		if v.Count+1 == count {
			missing = fmt.Sprintf("event %d was removed from the end", count)
		}
		return v.Count + 1, fmt.Sprintf("the log has %d events but its head was recorded at %d: %s", v.Count, count, missing), nil
	}
	evs, err := a.ListAudit(ctx, AuditFilter{AfterSeq: count - 1, Limit: 1})
	if err != nil {
		return 0, "", err
	}
	if len(evs) != 1 || evs[0].Seq != count {
		return count, fmt.Sprintf("event %d, where the head was recorded, cannot be read", count), nil
	}
	if !bytes.Equal(evs[0].Hash, hash) {
		return count, fmt.Sprintf("event %d's hash is not the recorded head's: the log was rewritten from there", count), nil
	}
	return 0, "", nil
}

// GrantKeyOf returns g's place in list order.
func GrantKeyOf(g grant.Grant) GrantKey {
	return GrantKey{Target: g.Target, Caller: g.Caller, ID: g.ID}
}

// Bundle sources.
const (
	BundleManual     = "manual"     // set by hand (kith bundle set)
	BundleFederation = "federation" // refreshed from a federation relationship's bundle endpoint
)

// FederatedBundle is another trust domain's bundle this server trusts and hands to the workloads whose
// entries federate with that trust domain.
type FederatedBundle struct {
	TrustDomain spiffeid.TrustDomain
	Bundle      []byte // SPIFFE bundle JSON (X.509 roots, JWT keys, sequence number, refresh hint)
	Source      string // BundleManual or BundleFederation
	Sequence    uint64 // the bundle's spiffe_sequence as it came
	UpdatedAt   time.Time
	Revision    int64
}

// Federation profiles (SPIFFE Trust Domain and Bundle specification, bundle endpoint profiles).
const (
	ProfileHTTPSSPIFFE = "https_spiffe"
	ProfileHTTPSWeb    = "https_web"
)

// Federation is a relationship with another trust domain whose bundle the server fetches from its bundle
// endpoint.
type Federation struct {
	TrustDomain       spiffeid.TrustDomain
	BundleEndpointURL string
	Profile           string      // ProfileHTTPSSPIFFE or ProfileHTTPSWeb
	EndpointSPIFFEID  spiffeid.ID // the endpoint server's SPIFFE ID (https_spiffe only)
	CreatedAt         time.Time
	UpdatedAt         time.Time
	Revision          int64
	Status            FederationStatus
}

// FederationStatus is how the last refresh of a relationship went.
type FederationStatus struct {
	LastRefresh time.Time // last successful fetch (zero: never)
	NextRefresh time.Time // when the server fetches again
	LastError   string    // the last fetch's error; empty when it succeeded
}
