package catest_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/catest"
)

func TestStore(t *testing.T) {
	ctx := context.Background()
	s := catest.NewStore()
	a := ca.Authority{ID: "a", Kind: ca.KindJWT, State: ca.StatePrepared}
	if err := s.PutAuthorities(ctx, "alice", "ca.prepare", []ca.Authority{a}); err != nil {
		t.Fatal(err)
	}
	a.State = ca.StateActive
	if err := s.PutAuthorities(ctx, "alice", "ca.activate", []ca.Authority{a}); err != nil {
		t.Fatal(err)
	}
	s.SetPutErr(errors.New("boom"))
	if err := s.PutAuthorities(ctx, "alice", "ca.rotate", nil); err == nil {
		t.Error("PutAuthorities succeeded with an injected error")
	}
	got, err := s.ListAuthorities(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]ca.Authority{a}, got); diff != "" {
		t.Errorf("authorities (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"ca.prepare", "ca.activate"}, s.Actions()); diff != "" {
		t.Errorf("actions (-want +got):\n%s", diff)
	}
}
