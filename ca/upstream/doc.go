// Package upstream holds the upstream authorities a Kith CA can sit under, one package each: disk (a CA
// certificate and key in files), stepca (a step-ca, through its sign API) and vault (a Vault PKI mount).
// Each implements [github.com/kithid/kith/ca.UpstreamAuthority]; the server builds the one
// `ca.upstream` names.
package upstream
