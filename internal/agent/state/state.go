// Package state is the node agent's state on disk: its own SVID and key, the bundle, the entries and
// revision, the workload SVIDs and keys, and the last authorization data and policy bundle, so that a
// restart during a server outage still serves. [Persister] saves it after changes.
package state

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/internal/atomicfile"
	"github.com/kithid/kith/svid/cache"
)

// State is what the agent persists so that a restart during a server outage still serves: its own SVID
// and key, the bundle, the entries and revision, and the workload SVIDs and keys. The file is JSON lines,
// mode 0600, in a 0700 directory, replaced atomically: this header first, then one line per entry and one
// per workload SVID. Lines are written one at a time, so saving ten thousand SVIDs needs no large buffer.
type State struct {
	Version   int             `json:"version"`
	AgentID   string          `json:"agent_id"`
	AgentSVID SVIDRecord      `json:"agent_svid"`
	Bundle    json.RawMessage `json:"bundle,omitempty"` // SPIFFE bundle JSON
	// Federated are the federated trust domains' bundles (SPIFFE bundle JSON by trust domain name).
	Federated map[string]json.RawMessage `json:"federated_bundles,omitempty"`
	Revision  int64                      `json:"revision"`
	// Authz is the last authorization data (agentv1.AuthzData, protobuf); Policy the last policy bundle.
	Authz          []byte `json:"authz,omitempty"`
	Policy         []byte `json:"policy,omitempty"`
	PolicyRevision string `json:"policy_revision,omitempty"`
	PolicyKey      []byte `json:"policy_key,omitempty"` // PEM, pinned on first use

	// Version 1 kept entries and SVIDs (PEM) in this one document; read when restoring such a file.
	V1Entries []entryRecord         `json:"entries,omitempty"`
	V1SVIDs   map[string]SVIDRecord `json:"svids,omitempty"`

	entries []cache.Entry          // restored from the lines after the header
	svids   map[string]*cache.SVID // by entry ID
}

// Entries is the number of entries read from the file.
func (st *State) Entries() int {
	return len(st.entries)
}

// stateLine is one line after the header: an entry or a workload SVID.
type stateLine struct {
	Entry *entryRecord `json:"entry,omitempty"`
	SVID  *svidLine    `json:"svid,omitempty"`
}

type svidLine struct {
	EntryID string `json:"entry_id"`
	Chain   []byte `json:"chain"` // DER certificates, leaf first
	Key     []byte `json:"key"`   // PKCS #8 DER
}

// SVIDRecord is an SVID in PEM.
type SVIDRecord struct {
	Chain []byte `json:"chain"` // PEM
	Key   []byte `json:"key"`   // PEM PKCS#8
}

type entryRecord struct {
	ID        string            `json:"id"`
	SPIFFEID  string            `json:"spiffe_id"`
	Selectors []string          `json:"selectors"`
	X509TTL   time.Duration     `json:"x509_ttl,omitempty"`
	JWTTTL    time.Duration     `json:"jwt_ttl,omitempty"`
	DNSNames  []string          `json:"dns_names,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	Revision  int64             `json:"revision"`
	// FederatesWith are trust domain names.
	FederatesWith []string `json:"federates_with,omitempty"`
}

// Version is the format written; older ones are read.
const Version = 2

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

// Path is the state file of an agent data dir.
func Path(dir string) string { return statePath(dir) }

// ErrCorrupt is what Load's error is (errors.Is) for a state file that does not parse.
var ErrCorrupt = errors.New("agent state is corrupt")

type corruptError struct {
	path string
	err  error
}

func (e *corruptError) Error() string {
	return fmt.Sprintf("agent state %s is corrupt (%v): remove it and attest again with --join-token", e.path, e.err)
}

func (e *corruptError) Is(target error) bool { return target == ErrCorrupt }

func encodeSVID(s *x509svid.SVID) (SVIDRecord, error) {
	certs, key, err := s.Marshal()
	if err != nil {
		return SVIDRecord{}, err
	}
	return SVIDRecord{Chain: certs, Key: key}, nil
}

// Decode parses the record.
func (r SVIDRecord) Decode() (*x509svid.SVID, error) {
	return x509svid.Parse(r.Chain, r.Key)
}

func toEntryRecord(e cache.Entry) entryRecord {
	return entryRecord{ID: e.ID, SPIFFEID: e.SPIFFEID.String(), Selectors: attestation.Strings(e.Selectors), X509TTL: e.X509TTL,
		JWTTTL: e.JWTTTL, DNSNames: e.DNSNames, Labels: e.Labels, Revision: e.Revision, FederatesWith: tdNames(e.FederatesWith)}
}

func tdNames(tds []spiffeid.TrustDomain) []string {
	var out []string
	for _, td := range tds {
		out = append(out, td.Name())
	}
	return out
}

func (r entryRecord) decode() (cache.Entry, error) {
	id, err := spiffeid.FromString(r.SPIFFEID)
	if err != nil {
		return cache.Entry{}, err
	}
	sels, err := attestation.ParseSelectors(r.Selectors)
	if err != nil {
		return cache.Entry{}, err
	}
	var fed []spiffeid.TrustDomain
	for _, n := range r.FederatesWith {
		td, err := spiffeid.TrustDomainFromString(n)
		if err != nil {
			return cache.Entry{}, err
		}
		fed = append(fed, td)
	}
	return cache.Entry{ID: r.ID, SPIFFEID: id, Selectors: sels, X509TTL: r.X509TTL, JWTTTL: r.JWTTTL, DNSNames: r.DNSNames,
		Labels: r.Labels, Revision: r.Revision, FederatesWith: fed}, nil
}

// Load reads the persisted state; a missing file returns (nil, nil). Entries and SVIDs that do not
// decode are skipped (the server sends them again).
func Load(dir string) (*State, error) {
	f, err := os.Open(statePath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read agent state: %w", err)
	}
	defer f.Close()
	corrupt := func(err error) error { return &corruptError{path: statePath(dir), err: err} }
	// One JSON document after another: lines of any length (a header with a large policy bundle).
	dec := json.NewDecoder(bufio.NewReaderSize(f, 64<<10))
	var st State
	switch err := dec.Decode(&st); {
	case errors.Is(err, io.EOF):
		return nil, corrupt(errors.New("empty file"))
	case err != nil:
		return nil, corrupt(err)
	}
	if st.Version > Version {
		return nil, fmt.Errorf("agent state %s was written by a newer kith (version %d): upgrade kith", statePath(dir), st.Version)
	}
	st.svids = map[string]*cache.SVID{}
	for _, r := range st.V1Entries {
		if e, err := r.decode(); err == nil {
			st.entries = append(st.entries, e)
		}
	}
	for id, r := range st.V1SVIDs {
		if s, err := r.Decode(); err == nil {
			if cs, err := cache.FromX509SVID(s); err == nil {
				st.svids[id] = cs
			}
		}
	}
	st.V1Entries, st.V1SVIDs = nil, nil
	for {
		var l stateLine
		if err := dec.Decode(&l); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, corrupt(err)
		}
		switch {
		case l.Entry != nil:
			if e, err := l.Entry.decode(); err == nil {
				st.entries = append(st.entries, e)
			}
		case l.SVID != nil:
			if s, err := cache.ParseSVID(l.SVID.Chain, l.SVID.Key); err == nil {
				st.svids[l.SVID.EntryID] = s
			}
		}
	}
	return &st, nil
}

// Save writes the header, then entries and svids, atomically with mode 0600.
func Save(dir string, st *State, entries []cache.Entry, svids map[string]*cache.SVID) error {
	st.Version = Version
	err := atomicfile.Write(statePath(dir), atomicfile.Options{Mode: 0o600}, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		if err := enc.Encode(st); err != nil {
			return err
		}
		for _, e := range entries {
			r := toEntryRecord(e)
			if err := enc.Encode(stateLine{Entry: &r}); err != nil {
				return err
			}
		}
		for _, e := range entries {
			s := svids[e.ID]
			if s == nil {
				continue
			}
			if err := enc.Encode(stateLine{SVID: &svidLine{EntryID: e.ID, Chain: s.Chain(), Key: s.Key}}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("write agent state: %w", err)
	}
	return nil
}

// Header captures the agent's own SVID, bundle and revision for saving.
func Header(agentID spiffeid.ID, agentSVID *x509svid.SVID, c *cache.Cache) (*State, error) {
	st := &State{AgentID: agentID.String(), Revision: c.Revision()}
	if agentSVID != nil {
		rec, err := encodeSVID(agentSVID)
		if err != nil {
			return nil, fmt.Errorf("encode agent svid: %w", err)
		}
		st.AgentSVID = rec
	}
	if b := c.Bundle(); b != nil {
		doc, err := b.Marshal()
		if err != nil {
			return nil, fmt.Errorf("encode bundle: %w", err)
		}
		st.Bundle = doc
	}
	for td, b := range c.FederatedBundles() {
		doc, err := b.Marshal()
		if err != nil {
			return nil, fmt.Errorf("encode federated bundle of %s: %w", td, err)
		}
		if st.Federated == nil {
			st.Federated = map[string]json.RawMessage{}
		}
		st.Federated[td.Name()] = doc
	}
	return st, nil
}

// Restore loads persisted entries, SVIDs and bundle into the cache. Expired SVIDs are dropped.
func (st *State) Restore(td spiffeid.TrustDomain, c *cache.Cache, now time.Time) (restored int, err error) {
	if len(st.Bundle) > 0 {
		b, err := spiffebundle.Parse(td, st.Bundle)
		if err != nil {
			return 0, fmt.Errorf("persisted bundle: %w", err)
		}
		c.SetBundle(b)
	}
	if len(st.Federated) > 0 {
		fed := make(map[spiffeid.TrustDomain]*spiffebundle.Bundle, len(st.Federated))
		for name, doc := range st.Federated {
			td, err := spiffeid.TrustDomainFromString(name)
			if err != nil {
				return 0, fmt.Errorf("persisted federated bundle %q: %w", name, err)
			}
			if fed[td], err = spiffebundle.Parse(td, doc); err != nil {
				return 0, fmt.Errorf("persisted federated bundle of %s: %w", td, err)
			}
		}
		c.SetFederatedBundles(fed)
	}
	c.ReplaceEntries(st.entries, st.Revision)
	for id, s := range st.svids {
		if !now.Before(s.NotAfter) {
			delete(st.svids, id)
		}
	}
	c.SetSVIDs(st.svids)
	return len(st.svids), nil
}
