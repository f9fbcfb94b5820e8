package agentapi

import (
	"context"
	"testing"

	"github.com/kithid/kith/internal/policy"
	"github.com/kithid/kith/internal/store/sqlite"
)

// benchAuthzSource is the server's source of authorization data over st.
func benchAuthzSource(tb testing.TB, st *sqlite.Store) AuthzSource {
	tb.Helper()
	p, err := policy.New(context.Background(), policy.Config{Store: st, DataDir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	return p
}
