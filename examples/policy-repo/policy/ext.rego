# Custom rules added to Kith's built-in grant check. Kith evaluates package kith.ext on every request.
package kith.ext

# No deletes against production from developers' identities.
deny contains "developers may not DELETE in prod" if {
	input.kith.method == "DELETE"
	startswith(input.kith.caller.id, "spiffe://example.org/user/")
	input.kith.target.labels.env == "prod"
}

# Mark developer traffic so the proxy can route it away from production.
headers["x-kith-caller-env"] := input.kith.caller.labels.env if input.kith.caller.labels.env
