//go:build !linux

package peer

import (
	"errors"
	"net"
)

// PeerCredentials is only supported on linux.
func PeerCredentials(*net.UnixConn) (Credentials, error) {
	return Credentials{}, errors.New("unix workload attestation: unsupported platform (needs linux)")
}
