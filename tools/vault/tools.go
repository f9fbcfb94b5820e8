//go:build tools

// Package tools pins the Vault server the upstream-CA tests run in dev mode.
package tools

import _ "github.com/hashicorp/vault"
