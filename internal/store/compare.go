package store

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
)

// Compare reads two stores through the contract and returns what differs between them (nothing: the same
// deployment), for checking a move to another backend (kith store migrate): both audit chains verify, to
// the same count and head, and the revision, the change feed, entries, tokens, agents, grants, modes,
// policy history, labels and CA authorities read back equal.
func Compare(ctx context.Context, a, b Backend) ([]string, error) {
	var diffs []string
	va, err := a.VerifyAudit(ctx)
	if err != nil {
		return nil, fmt.Errorf("verify the source's audit log: %w", err)
	}
	vb, err := b.VerifyAudit(ctx)
	if err != nil {
		return nil, fmt.Errorf("verify the destination's audit log: %w", err)
	}
	switch {
	case !va.OK:
		diffs = append(diffs, fmt.Sprintf("the source's audit chain is broken at %d: %s", va.BrokenAt, va.Problem))
	case !vb.OK:
		diffs = append(diffs, fmt.Sprintf("the destination's audit chain is broken at %d: %s", vb.BrokenAt, vb.Problem))
	case va.Count != vb.Count || !bytes.Equal(va.HeadHash, vb.HeadHash):
		diffs = append(diffs, fmt.Sprintf("audit chains differ: %d events ending in %x, and %d ending in %x", va.Count, va.HeadHash, vb.Count, vb.HeadHash))
	}
	reads := []struct {
		what string
		read func(Backend) (any, error)
	}{
		{"revision", func(s Backend) (any, error) { return s.Revision(ctx) }},
		{"change feed", func(s Backend) (any, error) { return s.ChangesSince(ctx, 0) }},
		{"entries", func(s Backend) (any, error) { return s.ListEntries(ctx, EntryFilter{}) }},
		{"join tokens", func(s Backend) (any, error) { return s.ListJoinTokens(ctx) }},
		{"agents", func(s Backend) (any, error) { return s.ListAgents(ctx) }},
		{"grants", func(s Backend) (any, error) { return s.ListGrants(ctx, GrantFilter{}) }},
		{"target modes", func(s Backend) (any, error) { return s.TargetModes(ctx) }},
		{"policy history", func(s Backend) (any, error) { return s.PolicyHistory(ctx, 1<<30) }},
		{"agent policy reports", func(s Backend) (any, error) { return s.AgentPolicies(ctx) }},
		{"policy labels", func(s Backend) (any, error) { return s.PolicyLabels(ctx) }},
		{"ca authorities", func(s Backend) (any, error) { return s.ListAuthorities(ctx) }},
		{"audit log", func(s Backend) (any, error) { return s.ListAudit(ctx, AuditFilter{}) }},
	}
	for _, r := range reads {
		x, err := r.read(a)
		if err != nil {
			return nil, fmt.Errorf("read the source's %s: %w", r.what, err)
		}
		y, err := r.read(b)
		if err != nil {
			return nil, fmt.Errorf("read the destination's %s: %w", r.what, err)
		}
		if !reflect.DeepEqual(x, y) {
			diffs = append(diffs, r.what+" differ")
		}
	}
	return diffs, nil
}
