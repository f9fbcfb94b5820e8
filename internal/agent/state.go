package agent

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/internal/agent/cache"
)

// state is what the agent persists so that a restart during a server outage still serves: its own SVID
// and key, the bundle, the entries and revision, and the workload SVIDs and keys. It is one JSON file,
// mode 0600, in a 0700 directory, replaced atomically.
type state struct {
	Version   int                   `json:"version"`
	AgentID   string                `json:"agent_id"`
	AgentSVID svidRecord            `json:"agent_svid"`
	Bundle    json.RawMessage       `json:"bundle,omitempty"` // SPIFFE bundle JSON
	Revision  int64                 `json:"revision"`
	Entries   []entryRecord         `json:"entries"`
	SVIDs     map[string]svidRecord `json:"svids"`
	// Authz is the last authorization data (agentv1.AuthzData, protobuf); Policy the last policy bundle.
	Authz          []byte `json:"authz,omitempty"`
	Policy         []byte `json:"policy,omitempty"`
	PolicyRevision string `json:"policy_revision,omitempty"`
	PolicyKey      []byte `json:"policy_key,omitempty"` // PEM, pinned on first use
}

type svidRecord struct {
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
}

const stateVersion = 1

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

func encodeSVID(s *x509svid.SVID) (svidRecord, error) {
	certs, key, err := s.Marshal()
	if err != nil {
		return svidRecord{}, err
	}
	return svidRecord{Chain: certs, Key: key}, nil
}

func (r svidRecord) decode() (*x509svid.SVID, error) {
	return x509svid.Parse(r.Chain, r.Key)
}

func toEntryRecord(e cache.Entry) entryRecord {
	return entryRecord{ID: e.ID, SPIFFEID: e.SPIFFEID.String(), Selectors: attestation.Strings(e.Selectors), X509TTL: e.X509TTL,
		JWTTTL: e.JWTTTL, DNSNames: e.DNSNames, Labels: e.Labels, Revision: e.Revision}
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
	return cache.Entry{ID: r.ID, SPIFFEID: id, Selectors: sels, X509TTL: r.X509TTL, JWTTTL: r.JWTTTL, DNSNames: r.DNSNames,
		Labels: r.Labels, Revision: r.Revision}, nil
}

// loadState reads the persisted state; a missing file returns (nil, nil).
func loadState(dir string) (*state, error) {
	data, err := os.ReadFile(statePath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read agent state: %w", err)
	}
	var st state
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("agent state %s is corrupt (%v): remove it and attest again with --join-token", statePath(dir), err)
	}
	if st.Version > stateVersion {
		return nil, fmt.Errorf("agent state %s was written by a newer kith (version %d): upgrade kith", statePath(dir), st.Version)
	}
	return &st, nil
}

// saveState writes the state atomically with mode 0600.
func saveState(dir string, st *state) error {
	st.Version = stateVersion
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode agent state: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".state-*.json")
	if err != nil {
		return fmt.Errorf("write agent state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write agent state: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write agent state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write agent state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write agent state: %w", err)
	}
	if err := os.Rename(tmp.Name(), statePath(dir)); err != nil {
		return fmt.Errorf("write agent state: %w", err)
	}
	return nil
}

// snapshotState captures the agent's current state for saving.
func snapshotState(agentID spiffeid.ID, agentSVID *x509svid.SVID, c *cache.Cache) (*state, error) {
	st := &state{AgentID: agentID.String(), Revision: c.Revision(), SVIDs: map[string]svidRecord{}}
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
	for _, e := range c.Entries() {
		st.Entries = append(st.Entries, toEntryRecord(e))
	}
	for id, s := range c.SVIDs() {
		rec, err := encodeSVID(s)
		if err != nil {
			return nil, fmt.Errorf("encode svid for entry %s: %w", id, err)
		}
		st.SVIDs[id] = rec
	}
	return st, nil
}

// restore loads persisted entries, SVIDs and bundle into the cache. Unparseable records are skipped.
func (st *state) restore(td spiffeid.TrustDomain, c *cache.Cache, now time.Time) (restored int, err error) {
	if len(st.Bundle) > 0 {
		b, err := spiffebundle.Parse(td, st.Bundle)
		if err != nil {
			return 0, fmt.Errorf("persisted bundle: %w", err)
		}
		c.SetBundle(b)
	}
	var entries []cache.Entry
	for _, r := range st.Entries {
		if e, err := r.decode(); err == nil {
			entries = append(entries, e)
		}
	}
	c.ReplaceEntries(entries, st.Revision)
	svids := map[string]*x509svid.SVID{}
	for id, r := range st.SVIDs {
		s, err := r.decode()
		if err != nil || !now.Before(s.Certificates[0].NotAfter) {
			continue
		}
		svids[id] = s
	}
	c.SetSVIDs(svids)
	return len(svids), nil
}

// parseBundlePEM reads PEM root certificates as a bundle for td.
func parseBundlePEM(td spiffeid.TrustDomain, data []byte) (*spiffebundle.Bundle, error) {
	var roots []*x509.Certificate
	rest := bytes.TrimSpace(data)
	for len(rest) > 0 {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		roots = append(roots, c)
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("no PEM certificates found")
	}
	return spiffebundle.FromX509Authorities(td, roots), nil
}
