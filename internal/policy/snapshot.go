package policy

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"iter"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/internal/grantpb"
	"github.com/kithid/kith/internal/store"
)

// DataStore is what the authorization data is read from.
type DataStore interface {
	ListGrants(ctx context.Context) ([]authz.Grant, error)
	TargetModes(ctx context.Context) (map[string]authz.Mode, error)
	ListEntries(ctx context.Context, f store.EntryFilter) ([]store.Entry, error)
}

// Snapshot is the authorization data at one store revision: every grant, target mode and identity label,
// and the same indexed by grant target, so that each agent's share is picked without a scan. It is built
// once per revision, shared by every Sync stream, and never changed.
type Snapshot struct {
	revision int64
	labelGen uint64
	data     authz.Data

	byTarget   map[string]*targetGrants // grant target (ID or pattern) → its grants, in store order
	prefixes   map[string]string        // pattern without its trailing "*" → the pattern
	prefixLens []int                    // the distinct lengths of the keys of prefixes, ascending
	labels     []*agentv1.IdentityLabels
	labelsSum  [32]byte
}

// targetGrants are the grants of one target as agents receive them.
type targetGrants struct {
	grants []*agentv1.Grant
	sum    [32]byte // digest of their deterministic encoding
}

// readData reads grants, modes and entry labels, and merges labels (the policy repository's) under
// those of the entries: an entry's label wins over the repository's for the same ID and name.
func readData(ctx context.Context, st DataStore, labels map[string]map[string]string) (authz.Data, error) {
	grants, err := st.ListGrants(ctx)
	if err != nil {
		return authz.Data{}, err
	}
	modes, err := st.TargetModes(ctx)
	if err != nil {
		return authz.Data{}, err
	}
	entries, err := st.ListEntries(ctx, store.EntryFilter{})
	if err != nil {
		return authz.Data{}, err
	}
	d := authz.Data{Grants: grants, Modes: modes, Labels: labelsOf(entries)}
	for id, l := range labels {
		if d.Labels[id] == nil {
			d.Labels[id] = map[string]string{}
		}
		for k, v := range l {
			if _, ok := d.Labels[id][k]; !ok {
				d.Labels[id][k] = v
			}
		}
	}
	return d, nil
}

// labelsOf merges the labels of every entry per SPIFFE ID.
func labelsOf(entries []store.Entry) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, e := range entries {
		if len(e.Labels) == 0 {
			continue
		}
		id := e.SPIFFEID.String()
		if out[id] == nil {
			out[id] = map[string]string{}
		}
		maps.Copy(out[id], e.Labels)
	}
	return out
}

// newSnapshot indexes d.
func newSnapshot(revision int64, labelGen uint64, d authz.Data) (*Snapshot, error) {
	s := &Snapshot{revision: revision, labelGen: labelGen, data: d,
		byTarget: map[string]*targetGrants{}, prefixes: map[string]string{}}
	for _, g := range d.Grants {
		t := s.byTarget[g.Target]
		if t == nil {
			t = &targetGrants{}
			s.byTarget[g.Target] = t
			if prefix, ok := strings.CutSuffix(g.Target, "*"); ok {
				s.prefixes[prefix] = g.Target
			}
		}
		t.grants = append(t.grants, grantpb.ToProto(g))
	}
	for _, t := range s.byTarget {
		sum, err := digest(&agentv1.AuthzData{Grants: t.grants})
		if err != nil {
			return nil, err
		}
		t.sum = sum
	}
	for prefix := range s.prefixes {
		s.prefixLens = append(s.prefixLens, len(prefix))
	}
	slices.Sort(s.prefixLens)
	s.prefixLens = slices.Compact(s.prefixLens)
	for _, id := range slices.Sorted(maps.Keys(d.Labels)) {
		s.labels = append(s.labels, &agentv1.IdentityLabels{SpiffeId: id, Labels: d.Labels[id]})
	}
	sum, err := digest(&agentv1.AuthzData{Labels: s.labels})
	if err != nil {
		return nil, err
	}
	s.labelsSum = sum
	return s, nil
}

func digest(m proto.Message) ([32]byte, error) {
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return [32]byte{}, fmt.Errorf("encode authorization data: %w", err)
	}
	return sha256.Sum256(raw), nil
}

// Revision is the store revision the snapshot was read at (or after).
func (s *Snapshot) Revision() int64 { return s.revision }

// Data is every grant, mode and label, for a decision engine. Callers must not change it.
func (s *Snapshot) Data() authz.Data { return s.data }

// Share is one agent's part of a Snapshot.
type Share struct {
	s       *Snapshot
	targets []string // grant targets that cover a served ID, sorted
	modes   []string // served IDs with a mode, sorted
}

// For picks the part of the snapshot an agent serving the SPIFFE IDs in served receives: the grants
// whose target is one of them or a prefix pattern ("…/*") of one, the modes of those IDs, and every
// identity label. served may repeat IDs.
func (s *Snapshot) For(served iter.Seq[string]) Share {
	sh := Share{s: s}
	for id := range served {
		if _, ok := s.byTarget[id]; ok {
			sh.targets = append(sh.targets, id)
		}
		for _, n := range s.prefixLens {
			if n > len(id) {
				break
			}
			if pattern, ok := s.prefixes[id[:n]]; ok {
				sh.targets = append(sh.targets, pattern)
			}
		}
		if _, ok := s.data.Modes[id]; ok {
			sh.modes = append(sh.modes, id)
		}
	}
	slices.Sort(sh.targets)
	sh.targets = slices.Compact(sh.targets)
	slices.Sort(sh.modes)
	sh.modes = slices.Compact(sh.modes)
	return sh
}

// Sum is a digest of the share's message: two shares with the same sum have the same message.
func (sh Share) Sum() [32]byte {
	h := sha256.New()
	var n [8]byte
	h.Write(binary.BigEndian.AppendUint64(n[:0], uint64(len(sh.targets))))
	for _, t := range sh.targets {
		h.Write(sh.s.byTarget[t].sum[:])
	}
	h.Write(binary.BigEndian.AppendUint64(n[:0], uint64(len(sh.modes))))
	for _, id := range sh.modes {
		m := string(sh.s.data.Modes[id])
		h.Write(binary.BigEndian.AppendUint64(n[:0], uint64(len(id))))
		h.Write([]byte(id))
		h.Write(binary.BigEndian.AppendUint64(n[:0], uint64(len(m))))
		h.Write([]byte(m))
	}
	h.Write(sh.s.labelsSum[:])
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// Message is the share as agents receive it. Its grants and labels are shared with other shares of the
// snapshot: neither may be changed.
func (sh Share) Message() *agentv1.AuthzData {
	out := &agentv1.AuthzData{Modes: make(map[string]string, len(sh.modes)), Labels: sh.s.labels}
	n := 0
	for _, t := range sh.targets {
		n += len(sh.s.byTarget[t].grants)
	}
	if n > 0 {
		out.Grants = make([]*agentv1.Grant, 0, n)
	}
	for _, t := range sh.targets {
		out.Grants = append(out.Grants, sh.s.byTarget[t].grants...)
	}
	for _, id := range sh.modes {
		out.Modes[id] = string(sh.s.data.Modes[id])
	}
	return out
}
