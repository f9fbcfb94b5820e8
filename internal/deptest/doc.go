// Package deptest pins the module's dependency rules in a test: public packages import no internal
// package; OPA, Envoy's go-control-plane, client-go, vault/api, pgx and the step-ca client are each
// imported only by the packages that exist to wrap them; the ca package stays on the standard library,
// go-spiffe and smallstep's crypto; no test helper reaches the kith binary.
package deptest
