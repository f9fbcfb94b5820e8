// Package attestation defines selectors: the attested facts about a node or a workload
// (such as "unix:uid:1000" or "join_token:name:node1") that registration entries are matched against.
package attestation

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
)

// MaxValueLength bounds a selector's value (a path, a hash, a name), so that no entry stores or pushes an
// unbounded one.
const MaxValueLength = 1024

// Selector is one attested fact in the form type:key:value.
type Selector struct {
	Type  string
	Key   string
	Value string
}

// Known selector types. A selector of any other type is rejected at the edge.
const (
	TypeUnix      = "unix"
	TypeK8s       = "k8s"
	TypeJoinToken = "join_token"
	TypeK8sPSAT   = "k8s_psat"
)

var knownTypes = []string{TypeUnix, TypeK8s, TypeJoinToken, TypeK8sPSAT}

// knownKeys lists, per type, the keys Kith's attestors produce. Types absent from the map accept any key.
var knownKeys = map[string][]string{
	TypeUnix:      {"uid", "gid", "user", "group", "path", "sha256", "supplementary_gid"},
	TypeJoinToken: {"name", "id"},
	TypeK8sPSAT: {"cluster", "agent_ns", "agent_sa", "agent_pod_name", "agent_pod_uid", "agent_node_name", "agent_node_uid",
		"agent_node_label", "agent_pod_label"},
	TypeK8s: {"ns", "sa", "pod-name", "pod-uid", "pod-label", "pod-image", "container-name", "container-image", "node-name"},
}

// ParseSelector parses "type:key:value". The value may itself contain colons.
func ParseSelector(s string) (Selector, error) {
	typ, rest, ok := strings.Cut(s, ":")
	if !ok {
		return Selector{}, fmt.Errorf("selector %q: want type:key:value, e.g. unix:uid:1000", s)
	}
	key, value, ok := strings.Cut(rest, ":")
	if !ok {
		return Selector{}, fmt.Errorf("selector %q: want type:key:value, e.g. unix:uid:1000", s)
	}
	sel := Selector{Type: typ, Key: key, Value: value}
	if err := sel.Validate(); err != nil {
		return Selector{}, err
	}
	return sel, nil
}

// ParseSelectors parses each string with ParseSelector and returns them sorted and deduplicated.
func ParseSelectors(ss []string) ([]Selector, error) {
	out := make([]Selector, 0, len(ss))
	for _, s := range ss {
		sel, err := ParseSelector(s)
		if err != nil {
			return nil, err
		}
		out = append(out, sel)
	}
	return Normalize(out), nil
}

// Validate reports whether the selector has a known type, a known key for that type and a non-empty value.
func (s Selector) Validate() error {
	if !slices.Contains(knownTypes, s.Type) {
		return fmt.Errorf("selector %q: unknown type %q (known: %s)", s.String(), s.Type, strings.Join(knownTypes, ", "))
	}
	if s.Key == "" {
		return fmt.Errorf("selector %q: empty key", s.String())
	}
	if keys, ok := knownKeys[s.Type]; ok && !slices.Contains(keys, s.Key) {
		return fmt.Errorf("selector %q: unknown key %q for type %s (known: %s)", s.String(), s.Key, s.Type, strings.Join(keys, ", "))
	}
	if s.Value == "" {
		return fmt.Errorf("selector %q: empty value", s.String())
	}
	if len(s.Value) > MaxValueLength {
		return fmt.Errorf("selector %s:%s:…: the value is %d bytes, at most %d", s.Type, s.Key, len(s.Value), MaxValueLength)
	}
	if strings.ContainsAny(s.Value, "\x00\n") {
		return fmt.Errorf("selector %q: value contains a control character", s.String())
	}
	if check, ok := valueGrammar[s.Type+":"+s.Key]; ok {
		if want := check(s.Value); want != "" {
			return fmt.Errorf("selector %q can never match: the %s attestor gives %s %s", s.String(), s.Type, s.Key, want)
		}
	}
	return nil
}

// valueGrammar checks, per type:key, that a value is one the attestor can produce: a selector that can never
// match is refused where it is entered, not left to match nothing. Each returns what a value must be, or "".
var valueGrammar = map[string]func(string) string{
	"unix:uid":               decimalID,
	"unix:gid":               decimalID,
	"unix:supplementary_gid": decimalID,
	"unix:path": func(v string) string {
		if !path.IsAbs(v) || path.Clean(v) != v {
			return "as an absolute, clean path, e.g. /usr/local/bin/server"
		}
		return ""
	},
	"unix:sha256": func(v string) string {
		if len(v) != 64 || strings.Trim(v, "0123456789abcdef") != "" {
			return "as 64 lowercase hex digits (sha256sum's output)"
		}
		return ""
	},
}

func decimalID(v string) string {
	if n, err := strconv.ParseUint(v, 10, 32); err != nil || strconv.FormatUint(n, 10) != v {
		return "as a decimal number, e.g. 1000 (use user or group for names)"
	}
	return ""
}

// String returns the selector as type:key:value.
func (s Selector) String() string { return s.Type + ":" + s.Key + ":" + s.Value }

// Compare orders selectors by type, key, then value.
func Compare(a, b Selector) int {
	if c := strings.Compare(a.Type, b.Type); c != 0 {
		return c
	}
	if c := strings.Compare(a.Key, b.Key); c != 0 {
		return c
	}
	return strings.Compare(a.Value, b.Value)
}

// Normalize sorts selectors and removes duplicates, in place.
func Normalize(sels []Selector) []Selector {
	slices.SortFunc(sels, Compare)
	return slices.Compact(sels)
}

// Strings returns the selectors in type:key:value form.
func Strings(sels []Selector) []string {
	out := make([]string, len(sels))
	for i, s := range sels {
		out[i] = s.String()
	}
	return out
}

// Set is a set of selectors for fast subset checks.
type Set map[Selector]struct{}

// NewSet builds a set from selectors.
func NewSet(sels ...Selector) Set {
	s := make(Set, len(sels))
	for _, sel := range sels {
		s[sel] = struct{}{}
	}
	return s
}

// ContainsAll reports whether every selector in want is in the set. An empty want is never matched,
// so an entry without selectors can never be served to anyone.
func (s Set) ContainsAll(want []Selector) bool {
	if len(want) == 0 {
		return false
	}
	for _, sel := range want {
		if _, ok := s[sel]; !ok {
			return false
		}
	}
	return true
}
