//go:build !linux

package unix

import (
	"context"
	"errors"
	"net"

	"github.com/kithid/kith/attestation"
)

var errUnsupported = errors.New("unix workload attestation: unsupported platform (needs linux)")

// PeerCredentials is only supported on linux.
func PeerCredentials(*net.UnixConn) (Credentials, error) { return Credentials{}, errUnsupported }

// Attest is only supported on linux.
func (a *Attestor) Attest(context.Context, Credentials) ([]attestation.Selector, error) {
	return nil, errUnsupported
}
