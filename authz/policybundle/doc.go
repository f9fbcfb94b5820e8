// Package policybundle is the format in which the server hands custom Rego policy to agents: an OPA
// bundle (.tar.gz) whose manifest carries the policy revision and the roots Kith's modules may use
// ([Roots]), signed with the server's ES256 key in OPA's signature format (.signatures.json).
//
// The server builds bundles with [BuildSigned]; an agent checks them with [ReadSigned] against the public
// key it pinned ([MarshalPublicKey] makes its PEM) before it gives the modules to its decision engine.
// A bundle with a file changed, added or removed after signing, signed by another key, or holding a
// module outside the roots is refused. [Build] and [Read] handle unsigned bundles, which agents accept
// only from a server that sends no key.
package policybundle
