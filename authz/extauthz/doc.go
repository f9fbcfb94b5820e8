// Package extauthz serves Envoy's external authorization API
// (envoy.service.auth.v3.Authorization/Check) with Kith's decision engine.
//
// It follows the conventions of OPA-Envoy: the caller is the peer
// certificate's URI SAN that Envoy puts in attributes.source.principal (or,
// without one, the subject of a JWT-SVID bearer token validated for the
// target), the target is attributes.destination.principal, and the policy
// sees the request attributes as input.attributes.
//
// An allowed request goes upstream with the decision's headers plus
// x-kith-caller and x-kith-decision (Envoy can route on them; set
// clear_route_cache on the ext_authz filter). A denied one is answered by
// Envoy with the decision's HTTP status (403 by default), an x-kith-reason
// header and a JSON body {"allowed":false,"reasons":[...]}. Any failure to
// decide denies: the server fails closed.
//
// Headers whose names start with x-kith- that the client sent are removed
// from an allowed request unless the decision sets them, so that a client
// cannot forge a header that routing or the upstream trusts.
package extauthz
