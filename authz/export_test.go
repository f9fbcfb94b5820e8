package authz

import (
	"context"

	"github.com/open-policy-agent/opa/v1/storage"
)

func readStore(ctx context.Context, e *Engine) (any, error) {
	return storage.ReadOne(ctx, e.store, grantsPath)
}
