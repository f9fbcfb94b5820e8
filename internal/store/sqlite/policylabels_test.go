package sqlite

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The conformance suite covers setting and replacing labels; this checks they are on disk.
func TestPolicyLabelsSurviveReopen(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	labels := map[string]map[string]string{"spiffe://example.org/c": {"tier": "1"}}
	if err := s.SetPolicyLabels(ctx, labels); err != nil {
		t.Fatal(err)
	}
	s.Close()
	got, err := openAt(t, path).PolicyLabels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(labels, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
