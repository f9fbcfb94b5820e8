// Package grant defines Kith's authorization grants and target modes as plain values: what a grant is, when
// it is valid, and how its caller, target and path patterns match. It imports only the standard library and
// go-spiffe, so the store, the admin and agent APIs and the CLI can use grants without the decision engine
// (package authz, which evaluates them with OPA).
package grant
