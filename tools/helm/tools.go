//go:build tools

// Package tools pins the Helm the deploy tests render deploy/helm/kith with (scripts/components/helm.sh).
package tools

import _ "helm.sh/helm/v4/cmd/helm"
