//go:build !linux

package unixsock

import (
	"errors"
	"net"
)

func peerIDs(*net.UnixConn) (ids, error) {
	return ids{}, errors.New("peer credentials are only read on linux")
}
