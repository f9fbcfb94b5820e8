package sqlite

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPolicyLabels(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	first := map[string]map[string]string{
		"spiffe://example.org/a": {"env": "prod", "team": "pay"},
		"spiffe://example.org/b": {"env": "dev"},
	}
	second := map[string]map[string]string{"spiffe://example.org/c": {"tier": "1"}}
	rev, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("no labels were set: none are returned", func(t *testing.T) {
		got, err := s.PolicyLabels(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(map[string]map[string]string{}, got); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
	t.Run("labels set are returned", func(t *testing.T) {
		if err := s.SetPolicyLabels(ctx, first); err != nil {
			t.Fatal(err)
		}
		got, err := s.PolicyLabels(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(first, got); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
	t.Run("setting labels replaces all of them", func(t *testing.T) {
		if err := s.SetPolicyLabels(ctx, second); err != nil {
			t.Fatal(err)
		}
		got, err := s.PolicyLabels(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(second, got); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
	t.Run("labels are kept across a reopen", func(t *testing.T) {
		s.Close()
		s2 := openAt(t, path)
		got, err := s2.PolicyLabels(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(second, got); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
		// Labels ride on the policy commit recorded with them: they make no revision of their own.
		after, err := s2.Revision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if after != rev {
			t.Errorf("revision %d, want %d", after, rev)
		}
	})
}
