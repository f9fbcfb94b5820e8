# Kith's built-in authorization policy.
#
# A request is allowed when an unexpired grant matches its caller, target,
# method and path, or when a custom rule in package kith.ext allows it, and
# no rule in package kith.ext denies it.
#
# Grants live in data.kith.grants[target_key][caller_key][grant_id], where a
# key is an exact SPIFFE ID or a prefix "spiffe://td/a/*". Kith computes the
# keys that can match a request (input.kith.target_keys, input.kith.caller_keys),
# so a decision looks up a handful of entries and never scans all grants.
package kith.authz

import rego.v1

default caller_present := false

caller_present if input.kith.caller.id != ""

# grants maps the ID of every grant stored for the request's caller and
# target keys to its state: "ok", "expired", "method" or "path".
grants[id] := state if {
	some tk in input.kith.target_keys
	some ck in input.kith.caller_keys
	some id, g in data.kith.grants[tk][ck]
	state := grant_state(g)
}

grant_state(g) := "expired" if {
	g.expires_at != 0
	g.expires_at <= input.kith.now
} else := "method" if {
	not method_ok(g)
} else := "path" if {
	not path_ok(g)
} else := "ok"

method_ok(g) if count(g.methods) == 0

method_ok(g) if input.kith.method in g.methods

path_ok(g) if count(g.paths) == 0

path_ok(g) if {
	some p in g.paths
	path_matches(p)
}

path_matches(p) if p.exact == input.kith.path

path_matches(p) if startswith(input.kith.path, p.prefix)

path_matches(p) if glob.match(p.glob, ["/"], input.kith.path)

default granted := false

granted if {
	some state in grants
	state == "ok"
}

# Extension points: package kith.ext may define
#   allow if ...                 (allows without a grant)
#   deny contains reason if ...  (denies; wins over grants and allows)
#   headers[name] := value       (headers added to the upstream request)
#   http_status := code          (status of a denial; 403 otherwise)
ext_deny := {r | some r in data.kith.ext.deny}

default ext_allow := false

ext_allow if data.kith.ext.allow == true

ext_headers := {k: v | some k, v in data.kith.ext.headers}

default http_status := 403

http_status := s if {
	s := data.kith.ext.http_status
	is_number(s)
}

default allow := false

allow if {
	count(ext_deny) == 0
	caller_present
	granted
}

allow if {
	count(ext_deny) == 0
	ext_allow
}

decision := {
	"allow": allow,
	"caller_present": caller_present,
	"grants": grants,
	"deny": ext_deny,
	"ext_allow": ext_allow,
	"headers": ext_headers,
	"http_status": http_status,
}
