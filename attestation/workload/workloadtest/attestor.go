// Package workloadtest provides a workload attestor for tests that returns fixed selectors or an error.
package workloadtest

import (
	"context"
	"sync"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/peer"
	"github.com/kithid/kith/attestation/workload"
)

// Attestor returns Selectors, or Err when set, for every caller, and records the pids it was asked about.
type Attestor struct {
	Selectors []attestation.Selector
	Err       error

	mu   sync.Mutex
	pids []int32
}

var _ workload.Attestor = (*Attestor)(nil)

// Attest returns a copy of a.Selectors, or a.Err.
func (a *Attestor) Attest(_ context.Context, creds peer.Credentials) ([]attestation.Selector, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pids = append(a.pids, creds.PID)
	if a.Err != nil {
		return nil, a.Err
	}
	return append([]attestation.Selector(nil), a.Selectors...), nil
}

// PIDs returns the pids Attest was called with, in order.
func (a *Attestor) PIDs() []int32 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]int32(nil), a.pids...)
}
