# Kith's built-in authorization policy.
#
# A request is allowed when it carries a caller identity and an unexpired
# grant matches its caller, target, method and path, or when a rule in
# package kith.ext allows it; and no rule in package kith.ext denies it.
#
# Grants live in data.kith.grants[target_key][caller_key][grant_id]. A key is
# an exact SPIFFE ID or a prefix "spiffe://td/a/*". Kith computes the keys
# that can match a request (input.kith.target_keys, input.kith.caller_keys),
# so a decision looks up a handful of entries and never scans the grants.
# A grant's methods and paths are objects keyed the same way: methods by
# input.kith.method_keys (["GET", "*"]), paths by input.kith.path_keys
# (["/api/v1", "/*", "/api/*"]: the path, then the "/*" pattern of each
# ancestor). Path patterns with a "*" inside a segment are in globs.
#
# A grant with g.ext set has conditions Kith checks in Go, for the few grants
# the request's keys find (path expressions, headers, ports, exceptions): the
# IDs of those the request meets are in input.kith.ext_ok. A grant with g.deny
# set is a deny rule: it denies what it matches, whatever the grants allow.
package kith.authz

import rego.v1

# matches is the set of IDs of the grants that allow the request.
matches contains id if {
	some id, g in hits
	not g.deny
}

# denies is the set of IDs of the deny rules that match the request.
denies contains id if {
	some id, g in hits
	g.deny
}

# hits are the grants and deny rules that match the request, by ID (what Kith asks for: one pass over
# the index, split into grants and deny rules by g.deny).
hits[id] := g if {
	grants := data.kith.grants
	some tk in input.kith.target_keys
	callers := grants[tk]
	some ck in input.kith.caller_keys
	some id, g in callers[ck]
	g.expires_at > input.kith.now
	some mk in input.kith.method_keys
	g.methods[mk]
	path_ok(g)
	ext_ok(id, g)
}

ext_ok(_, g) if not g.ext

ext_ok(id, g) if {
	g.ext
	input.kith.ext_ok[id]
}

path_ok(g) if {
	some pk in input.kith.path_keys
	g.paths[pk]
}

path_ok(g) if {
	some pattern in g.globs
	glob.match(pattern, ["/"], input.kith.path)
}

# Extension points: package kith.ext may define
#   allow if ...                 (allows without a grant, even without a caller identity)
#   deny contains reason if ...  (denies; wins over grants and allows)
#   headers[name] := value       (headers added to the upstream request)
#   http_status := code          (status of a denial; 403 otherwise)
default ext_deny := set()

ext_deny := data.kith.ext.deny

default ext_allow := false

ext_allow if data.kith.ext.allow == true

default ext_headers := {}

ext_headers := data.kith.ext.headers

default http_status := 403

http_status := data.kith.ext.http_status

default allow := false

allow if {
	input.kith.caller.id != ""
	count(matches) > 0
	count(denies) == 0
	count(ext_deny) == 0
}

allow if {
	ext_allow
	count(denies) == 0
	count(ext_deny) == 0
}

# decision is what Kith asks for each request (the parts that package
# kith.ext does not define are left out).
decision := {
	"allow": allow,
	"grants": matches,
	"denies": denies,
	"deny": ext_deny,
	"ext_allow": ext_allow,
	"headers": ext_headers,
	"http_status": http_status,
}
