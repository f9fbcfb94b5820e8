package policy

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"maps"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/internal/grantpb"
	"github.com/kithid/kith/internal/store"
)

// DataStore is what the authorization data is read from: grants, modes, entry labels, and the change
// feed that says which of them changed since a snapshot.
type DataStore interface {
	ListGrants(ctx context.Context, f store.GrantFilter) ([]grant.Grant, error)
	GetGrant(ctx context.Context, id string) (grant.Grant, error)
	TargetModes(ctx context.Context) (map[string]grant.Mode, error)
	ListEntries(ctx context.Context, f store.EntryFilter) ([]store.Entry, error)
	ChangesSince(ctx context.Context, rev int64) ([]store.Change, error)
	ListUsers(ctx context.Context) ([]store.User, error)
}

// maxIncremental is the number of changed grants above which a snapshot reads every grant again rather
// than each changed one.
const maxIncremental = 1000

// Snapshot is the authorization data at one store revision: every grant, target mode and identity label,
// indexed by grant target, so that each agent's share is picked without a scan. It is built once per
// revision (from the previous one and the grants that changed), shared by every Sync stream, and never
// changed.
type Snapshot struct {
	revision int64
	labelGen uint64

	byTarget   map[string]*targetGrants // grant target (ID or pattern) → its grants, in store order
	targetOf   map[string]string        // grant ID → its target
	prefixes   map[string]string        // pattern without its trailing "*" → the pattern
	prefixLens []int                    // the distinct lengths of the keys of prefixes, ascending
	modes      map[string]grant.Mode
	labelMap   map[string]map[string]string
	labels     []*agentv1.IdentityLabels
	labelsSum  [32]byte

	dataOnce sync.Once
	data     authz.Data
}

// targetGrants are the grants of one target, ordered by caller then ID as the store lists them, and the
// same as agents receive them. Never changed once in a snapshot.
type targetGrants struct {
	grants []grant.Grant
	protos []*agentv1.Grant
	sum    [32]byte // digest of the protos' deterministic encoding
}

func newTargetGrants(gs []grant.Grant) (*targetGrants, error) {
	t := &targetGrants{grants: gs, protos: make([]*agentv1.Grant, len(gs))}
	for i, g := range gs {
		t.protos[i] = grantpb.ToProto(g)
	}
	sum, err := digest(&agentv1.AuthzData{Grants: t.protos})
	if err != nil {
		return nil, err
	}
	t.sum = sum
	return t, nil
}

// labelsOf merges the labels of every entry per SPIFFE ID, then each user's (spiffe://TD/user/<name>; a
// disabled user also gets authz.DisabledLabel, so that agents deny its calls), and then repo (the policy
// repository's labels) under them: an entry's label wins over the repository's for the same ID and name.
func labelsOf(entries []store.Entry, users []store.User, td string, repo map[string]map[string]string) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, u := range users {
		if len(u.Labels) == 0 && !u.Disabled {
			continue
		}
		l := maps.Clone(u.Labels)
		if l == nil {
			l = map[string]string{}
		}
		if u.Disabled {
			l[authz.DisabledLabel] = "true"
		}
		out["spiffe://"+td+"/user/"+u.Name] = l
	}
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
	for id, l := range repo {
		if out[id] == nil {
			out[id] = map[string]string{}
		}
		for k, v := range l {
			if _, ok := out[id][k]; !ok {
				out[id][k] = v
			}
		}
	}
	return out
}

// readSnapshot reads everything at (or after) revision rev.
func readSnapshot(ctx context.Context, st DataStore, td string, rev int64, labelGen uint64, repoLabels map[string]map[string]string) (*Snapshot, error) {
	grants, err := st.ListGrants(ctx, store.GrantFilter{})
	if err != nil {
		return nil, err
	}
	modes, err := st.TargetModes(ctx)
	if err != nil {
		return nil, err
	}
	entries, err := st.ListEntries(ctx, store.EntryFilter{})
	if err != nil {
		return nil, err
	}
	s := &Snapshot{revision: rev, labelGen: labelGen, byTarget: map[string]*targetGrants{},
		targetOf: make(map[string]string, len(grants)), modes: modes}
	for i := 0; i < len(grants); {
		j := i + 1
		for j < len(grants) && grants[j].Target == grants[i].Target {
			j++
		}
		t, err := newTargetGrants(grants[i:j:j])
		if err != nil {
			return nil, err
		}
		s.byTarget[grants[i].Target] = t
		for _, g := range grants[i:j] {
			s.targetOf[g.ID] = g.Target
		}
		i = j
	}
	users, err := st.ListUsers(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.finish(labelsOf(entries, users, td, repoLabels)); err != nil {
		return nil, err
	}
	return s, nil
}

// next returns the snapshot after prev: prev with the grants, modes and labels that changed since it
// read again. It reads everything when many grants changed.
func next(ctx context.Context, st DataStore, td string, prev *Snapshot, rev int64, labelGen uint64, repoLabels map[string]map[string]string) (*Snapshot, error) {
	changes, err := st.ChangesSince(ctx, prev.revision)
	if err != nil {
		return nil, err
	}
	var grantIDs []string
	modesChanged, labelsChanged := false, labelGen != prev.labelGen
	seen := map[string]bool{}
	for _, c := range changes {
		switch c.Kind {
		case store.KindGrant:
			if !seen[c.ID] {
				seen[c.ID] = true
				grantIDs = append(grantIDs, c.ID)
			}
		case store.KindMode:
			modesChanged = true
		case store.KindEntry, store.KindUser:
			labelsChanged = true
		}
	}
	if len(grantIDs) > maxIncremental {
		return readSnapshot(ctx, st, td, rev, labelGen, repoLabels)
	}
	if len(changes) > 0 {
		rev = max(rev, changes[len(changes)-1].Revision)
	}
	s := &Snapshot{revision: rev, labelGen: labelGen, byTarget: prev.byTarget, targetOf: prev.targetOf, modes: prev.modes}
	if len(grantIDs) > 0 {
		s.byTarget, s.targetOf = maps.Clone(prev.byTarget), maps.Clone(prev.targetOf)
		touched := map[string][]grant.Grant{} // target → its grants so far
		bucket := func(target string) []grant.Grant {
			if gs, ok := touched[target]; ok {
				return gs
			}
			var gs []grant.Grant
			if t := s.byTarget[target]; t != nil {
				gs = slices.Clone(t.grants)
			}
			touched[target] = gs
			return gs
		}
		for _, id := range grantIDs {
			if old, ok := s.targetOf[id]; ok {
				touched[old] = slices.DeleteFunc(bucket(old), func(g grant.Grant) bool { return g.ID == id })
				delete(s.targetOf, id)
			}
			g, err := st.GetGrant(ctx, id)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			gs := bucket(g.Target)
			i, _ := slices.BinarySearchFunc(gs, g, compareGrants)
			touched[g.Target] = slices.Insert(gs, i, g)
			s.targetOf[id] = g.Target
		}
		for target, gs := range touched {
			if len(gs) == 0 {
				delete(s.byTarget, target)
				continue
			}
			t, err := newTargetGrants(gs)
			if err != nil {
				return nil, err
			}
			s.byTarget[target] = t
		}
	}
	if modesChanged {
		if s.modes, err = st.TargetModes(ctx); err != nil {
			return nil, err
		}
	}
	labels := prev.labelMap
	if labelsChanged {
		entries, err := st.ListEntries(ctx, store.EntryFilter{})
		if err != nil {
			return nil, err
		}
		users, err := st.ListUsers(ctx)
		if err != nil {
			return nil, err
		}
		labels = labelsOf(entries, users, td, repoLabels)
	}
	if len(grantIDs) == 0 && !labelsChanged {
		s.prefixes, s.prefixLens = prev.prefixes, prev.prefixLens
		s.labelMap, s.labels, s.labelsSum = prev.labelMap, prev.labels, prev.labelsSum
		return s, nil
	}
	if err := s.finish(labels); err != nil {
		return nil, err
	}
	return s, nil
}

// compareGrants orders grants of one target as the store lists them: by caller, then ID.
func compareGrants(a, b grant.Grant) int {
	if c := strings.Compare(a.Caller, b.Caller); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

// finish indexes the prefix targets and sets the labels.
func (s *Snapshot) finish(labels map[string]map[string]string) error {
	s.prefixes = map[string]string{}
	for target := range s.byTarget {
		if prefix, ok := strings.CutSuffix(target, "*"); ok {
			s.prefixes[prefix] = target
		}
	}
	s.prefixLens = nil
	for prefix := range s.prefixes {
		s.prefixLens = append(s.prefixLens, len(prefix))
	}
	slices.Sort(s.prefixLens)
	s.prefixLens = slices.Compact(s.prefixLens)
	s.labelMap = labels
	s.labels = nil
	for _, id := range slices.Sorted(maps.Keys(labels)) {
		s.labels = append(s.labels, &agentv1.IdentityLabels{SpiffeId: id, Labels: labels[id]})
	}
	sum, err := digest(&agentv1.AuthzData{Labels: s.labels})
	if err != nil {
		return err
	}
	s.labelsSum = sum
	return nil
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

// Data is every grant (ordered by target, caller and ID), mode and label, for a decision engine. Callers
// must not change it.
func (s *Snapshot) Data() authz.Data {
	s.dataOnce.Do(func() {
		n := 0
		for _, t := range s.byTarget {
			n += len(t.grants)
		}
		grants := make([]grant.Grant, 0, n)
		for _, target := range slices.Sorted(maps.Keys(s.byTarget)) {
			grants = append(grants, s.byTarget[target].grants...)
		}
		s.data = authz.Data{Grants: grants, Modes: s.modes, Labels: s.labelMap}
	})
	return s.data
}

// Share is one agent's part of a Snapshot.
type Share struct {
	s       *Snapshot
	targets []string // grant targets that cover a served ID, sorted
	modes   []string // served IDs with a mode, sorted
}

// For picks the part of the snapshot an agent serving the SPIFFE IDs in served receives: the grants
// whose target covers one of them ([grant.Covers]: the ID itself or a prefix pattern "…/*" of it), the
// modes of those IDs, and every identity label. served may repeat IDs. Targets are found by lookups (the
// ID, and each of its prefixes as long as a pattern), not by matching every target.
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
		if _, ok := s.modes[id]; ok {
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
		m := string(sh.s.modes[id])
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
		n += len(sh.s.byTarget[t].protos)
	}
	if n > 0 {
		out.Grants = make([]*agentv1.Grant, 0, n)
	}
	for _, t := range sh.targets {
		out.Grants = append(out.Grants, sh.s.byTarget[t].protos...)
	}
	for _, id := range sh.modes {
		out.Modes[id] = string(sh.s.modes[id])
	}
	return out
}
