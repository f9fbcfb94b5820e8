# Kith's built-in policy for the admin API over mTLS (admin.listen): who may
# do what, for people who logged in with kith login. The local admin socket
# is not subject to it (break-glass).
#
# input:
#   method   the admin RPC, e.g. "CreateGrant"
#   caller   {"id", "user", "roles": [...], "labels": {...}}
#   target   the identity the call is about, when there is one:
#            {"id", "owners": [user names], "owner_teams": [team labels]}
#            (from its entries' labels owner=<user> and owner-team=<team>)
#   subject  the other identity a grant, kith can or a grant list names
#            (the caller of a grant): {"id"}
#   request  what the call asks for, e.g. {"duration_seconds", "reason"}
#
# A policy repository extends it in package kith.admin.ext:
#   allow if ...                 (allows a call the built-in rules refuse)
#   deny contains reason if ...  (refuses; wins over everything)
#   auto_approve if ...          (approves an access request on creation)
package kith.admin

import rego.v1

# Calls about the caller alone, or that only read what every user may know.
always := {
	"WhoAmI", "RenewLogin", "Login", "GetLoginConfig", "GetBundle", "GetServerInfo", "CreateConsoleLogin",
	"ListEntries", "GetEntry", "GetEnforcement", "CreateAccessRequest", "ListAccessRequests",
}

# Calls an owner of their target may make.
owner_methods := {"CreateGrant", "RevokeGrants", "SetTargetMode", "DecideAccessRequest"}

# Calls about identities the caller owns or is.
lookup_methods := {"Can", "ListGrants", "GetIdentityActivity"}

admin if "admin" in input.caller.roles

owner if input.caller.user in input.target.owners

owner if {
	some team in input.target.owner_teams
	input.caller.labels.team == team
}

self if input.subject.id == input.caller.id

self if input.target.id == input.caller.id

default builtin_allow := false

builtin_allow if admin

builtin_allow if input.method in always

builtin_allow if {
	input.method in owner_methods
	owner
}

builtin_allow if {
	input.method in lookup_methods
	owner
}

builtin_allow if {
	input.method in lookup_methods
	self
}

builtin_allow if {
	input.method == "MintJWTSVID"
	self
}

default ext_allow := false

ext_allow if data.kith.admin.ext.allow == true

default ext_deny := set()

ext_deny := data.kith.admin.ext.deny

default auto_approve := false

auto_approve if data.kith.admin.ext.auto_approve == true

default allow := false

allow if {
	builtin_allow
	count(ext_deny) == 0
}

allow if {
	ext_allow
	count(ext_deny) == 0
}

# why says why a call is refused, in words.
why contains msg if {
	count(ext_deny) > 0
	some r in ext_deny
	msg := sprintf("policy denies it: %s", [r])
}

why contains msg if {
	not builtin_allow
	not ext_allow
	input.method in owner_methods
	msg := sprintf("%s is not an owner of %s (%s); its owners and users with role admin may %s", [input.caller.user, target_id, owners_text, input.method])
}

why contains msg if {
	not builtin_allow
	not ext_allow
	input.method in lookup_methods
	msg := sprintf("%s may ask about identities they own or are, and %s is neither (%s); users with role admin may ask about any", [input.caller.user, about, owners_text])
}

why contains msg if {
	not builtin_allow
	not ext_allow
	input.method == "MintJWTSVID"
	msg := sprintf("%s may mint JWT-SVIDs for their own identity only, not %s", [input.caller.user, target_id])
}

why contains msg if {
	not builtin_allow
	not ext_allow
	not input.method in owner_methods
	not input.method in lookup_methods
	input.method != "MintJWTSVID"
	msg := sprintf("%s is for users with role admin; %s has roles [%s]", [input.method, input.caller.user, concat(", ", object.get(input.caller, "roles", []))])
}

default target_id := "no target"

target_id := input.target.id

default about := "nothing named"

about := input.target.id if input.target.id != ""

about := input.subject.id if {
	not input.target.id
	input.subject.id
}

default owners_text := "it has no owner labels"

owners_text := text if {
	parts := array.concat(
		[sprintf("owner=%s", [o]) | some o in input.target.owners],
		[sprintf("owner-team=%s", [t]) | some t in input.target.owner_teams],
	)
	count(parts) > 0
	text := sprintf("its entries are labelled %s", [concat(", ", parts)])
}

decision := {"allow": allow, "why": why, "auto_approve": auto_approve}
