//go:build tools

// Package tools pins the SPIRE server and agent the federation interop tests (build tag federation) run against
// Kith: SPIRE is a test-only tool and stays out of the project's go.mod.
package tools

import (
	_ "github.com/spiffe/spire/cmd/spire-agent"
	_ "github.com/spiffe/spire/cmd/spire-server"
)
