//go:build !linux

package k8s

import (
	"errors"

	"github.com/kithid/kith/attestation/peer"
)

type peerCredentials = peer.Credentials

func (a *Attestor) container(peer.Credentials) (Container, error) {
	return Container{}, errors.New("k8s attestor: reading a process's cgroups is linux-only")
}
