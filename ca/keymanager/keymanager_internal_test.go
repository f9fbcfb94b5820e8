package keymanager

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/kithid/kith/ca"
)

// isolate gives the test an empty registry and puts the real one back afterwards.
func isolate(t *testing.T) {
	t.Helper()
	mu.Lock()
	saved := registry
	registry = map[string]NewFunc{}
	mu.Unlock()
	t.Cleanup(func() {
		mu.Lock()
		registry = saved
		mu.Unlock()
	})
}

type fake struct{ ca.KeyManager }

func TestRegisterAddsAKeyManager(t *testing.T) {
	isolate(t)
	boom := errors.New("boom")
	Register("keymanager-test-failing", func(Options) (ca.KeyManager, error) { return nil, boom })
	Register("keymanager-test-fake", func(Options) (ca.KeyManager, error) { return fake{}, nil })
	if _, err := New("keymanager-test-failing", Options{}); !errors.Is(err, boom) {
		t.Errorf("New of a failing key manager: got %v, want its error", err)
	}
	km, err := New("keymanager-test-fake", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := km.(fake); !ok {
		t.Errorf("New returned a %T, want the registered fake", km)
	}
	if diff := cmp.Diff([]string{"keymanager-test-failing", "keymanager-test-fake"}, Names()); diff != "" {
		t.Errorf("Names() (-want +got):\n%s", diff)
	}
}

func TestRegisterPanicsOnMistakes(t *testing.T) {
	isolate(t)
	Register("memory", func(Options) (ca.KeyManager, error) { return fake{}, nil })
	newFake := func(Options) (ca.KeyManager, error) { return fake{}, nil }
	tests := []struct {
		name  string
		km    string
		fn    NewFunc
		panic string
	}{
		{"a name registered twice", "memory", newFake, "keymanager: memory is registered twice"},
		{"an empty name", "", newFake, "keymanager: Register with an empty name"},
		{"a nil func", "keymanager-test-nil", nil, "keymanager: Register keymanager-test-nil with a nil func"},
	}
	for _, tt := range tests {
		t.Run("panics on "+tt.name, func(t *testing.T) {
			defer func() {
				if diff := cmp.Diff(tt.panic, recover()); diff != "" {
					t.Errorf("panic (-want +got):\n%s", diff)
				}
			}()
			Register(tt.km, tt.fn)
		})
	}
}
