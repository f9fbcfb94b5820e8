//go:build !linux

package unix

import (
	"context"
	"errors"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/peer"
)

var errUnsupported = errors.New("unix workload attestation: unsupported platform (needs linux)")

// Attest is only supported on linux.
func (a *Attestor) Attest(context.Context, peer.Credentials) ([]attestation.Selector, error) {
	return nil, errUnsupported
}
