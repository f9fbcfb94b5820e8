// Package authz decides whether one workload may call another.
//
// An [Engine] evaluates, with OPA, Kith's built-in Rego policy together with
// custom Rego modules (from the policy repository) for every request that
// Envoy's ext_authz filter asks about, and explains its answer.
//
// The built-in policy allows a request when it carries a caller identity and
// an unexpired [Grant] matches its caller, target, method and path. Grants
// are kept in OPA's in-memory store, indexed by target then caller
// (data.kith.grants[target_key][caller_key][grant_id]), so the cost of a
// decision does not depend on how many grants there are: the engine computes
// the few keys that can match a request (the exact SPIFFE ID and each
// ancestor prefix such as "spiffe://example.org/ns/dev/*") and the policy
// looks only those up. Changing grants, labels or modes is a store
// transaction, not a recompilation.
//
// Custom modules extend the decision in package kith.ext:
//
//	package kith.ext
//
//	# denials win over grants and allows
//	deny contains "dev may not call prod" if {
//		input.kith.caller.labels.env == "dev"
//		input.kith.target.labels.env == "prod"
//	}
//
//	# allows without a grant, even without a caller identity
//	allow if input.parsed_path == ["healthz"]
//
//	# headers added to the upstream request
//	headers["x-kith-caller-env"] := input.kith.caller.labels.env
//
//	# status of a denial (403 otherwise)
//	http_status := 401 if input.kith.caller.id == ""
//
// The input document is OPA-Envoy's (input.attributes, input.parsed_path,
// input.parsed_query), so rules written for OPA-Envoy work unchanged, plus
// input.kith: caller and target (id, labels), method, path (cleaned of dot
// segments), now (unix nanoseconds of the engine's clock) and the lookup
// keys. With [Config].Decision an OPA-Envoy decision such as
// data.envoy.authz.allow replaces the built-in one altogether.
//
// [Engine.SetPolicy] compiles new modules, evaluates them on sample requests
// and swaps them in atomically; a policy that fails to parse, compile or
// evaluate is refused with file and line, and the previous one stays in
// force. Targets in [ModeAudit] have denials logged and counted but let
// through.
package authz
