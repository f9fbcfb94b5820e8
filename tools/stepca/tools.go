//go:build tools

// Package tools pins step-ca and the step CLI for the upstream-CA tests.
package tools

import (
	_ "github.com/smallstep/certificates/cmd/step-ca"
	_ "github.com/smallstep/cli/cmd/step"
)
