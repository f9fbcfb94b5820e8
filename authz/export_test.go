package authz

import (
	"context"

	"github.com/open-policy-agent/opa/v1/storage"
)

func readStore(ctx context.Context, e *Engine) (any, error) {
	return storage.ReadOne(ctx, e.store, grantsPath)
}

// ReadSignedFast is the fast bundle reader alone; ErrNeedsParse is its answer for a bundle it leaves to OPA's.
func ReadSignedFast(data, publicKeyPEM []byte) error {
	_, _, err := readSigned(data, verificationConfig(publicKeyPEM))
	return err
}

var ErrNeedsParse = errNeedsParse
