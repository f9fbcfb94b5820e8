package memory_test

import (
	"context"
	"testing"

	"github.com/kithid/kith/ca/keymanager/memory"
)

func TestManager(t *testing.T) {
	ctx := context.Background()
	m := memory.New()
	key, err := m.GenerateKey(ctx, "a")
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	if _, err := m.GenerateKey(ctx, "a"); err == nil {
		t.Error("GenerateKey on an existing id succeeded")
	}
	got, err := m.GetKey(ctx, "a")
	if err != nil || got != key {
		t.Errorf("GetKey: got %v, %v; want the generated key", got, err)
	}
	if err := m.DeleteKey(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := m.DeleteKey(ctx, "a"); err != nil {
		t.Errorf("DeleteKey of a missing key: %v", err)
	}
	if _, err := m.GetKey(ctx, "a"); err == nil {
		t.Error("GetKey after delete succeeded")
	}
}
