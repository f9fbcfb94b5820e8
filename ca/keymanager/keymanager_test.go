package keymanager_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/keymanager"
	"github.com/kithid/kith/ca/keymanager/disk"
	"github.com/kithid/kith/ca/keymanager/memory"
)

func TestTheBuiltInKeyManagersRegisterThemselves(t *testing.T) {
	for _, name := range []string{disk.Name, memory.Name} {
		if !slices.Contains(keymanager.Names(), name) {
			t.Errorf("Names() = %v, want it to contain %q", keymanager.Names(), name)
		}
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name     string
		km       string
		opts     keymanager.Options
		wantType ca.KeyManager
		wantErr  string
	}{
		{"makes a memory key manager", "memory", keymanager.Options{}, &memory.Manager{}, ""},
		{"makes a disk key manager in Dir", "disk", keymanager.Options{Dir: t.TempDir()}, &disk.Manager{}, ""},
		{"passes the key manager's own error on", "disk", keymanager.Options{}, nil, "disk key manager: directory is required"},
		{"lists the known names for an unknown one", "vault", keymanager.Options{}, nil, `unknown key manager "vault": use one of disk, memory`},
		{"refuses the empty name", "", keymanager.Options{}, nil, `unknown key manager "": use one of`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			km, err := keymanager.New(tt.km, tt.opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(typeName(tt.wantType), typeName(km)); diff != "" {
				t.Errorf("type (-want +got):\n%s", diff)
			}
			if _, err := km.GenerateKey(context.Background(), "k1"); err != nil {
				t.Errorf("GenerateKey: %v", err)
			}
		})
	}
}

func typeName(v any) string { return fmt.Sprintf("%T", v) }
