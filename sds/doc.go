// Package sds serves workload certificates and trust bundles to proxies (Envoy, Istio's proxies, any
// xDS client) over the Envoy Secret Discovery Service v3.
//
// A [Server] registers envoy.service.secret.v3.SecretDiscoveryService (StreamSecrets, FetchSecrets and
// DeltaSecrets) and envoy.service.discovery.v3.AggregatedDiscoveryService (secrets only) on the agent's
// gRPC server. Each caller is attested from its unix peer credentials like a Workload API caller and
// only ever receives its own identities.
//
// Resource names:
//
//	default              the caller's first identity, as a tls_certificate (Istio's name)
//	spiffe://TD/path     the caller's identity with that SPIFFE ID, as a tls_certificate
//	ROOTCA               the agent's own trust domain bundle, as a validation_context
//	spiffe://TD          that trust domain's bundle, as a validation_context
//	ALL                  every bundle the agent has, in one validation_context
//
// An empty name list means every identity (named by SPIFFE ID) and every bundle (named spiffe://TD).
// Repeated names are served once. A stream may ask for at most 128 distinct names (a request, or a
// delta stream's subscriptions together); more ends the stream with InvalidArgument.
//
// Validation contexts use Envoy's SPIFFE certificate validator (envoy.tls.cert_validator.spiffe) unless
// the proxy's node metadata sets "kith.io/validation": "trusted_ca" or SPIRE's
// "disable_spiffe_cert_validation": true, in which case they carry a plain trusted_ca.
//
// Pushes go only to the streams whose secrets changed. Streams hold no goroutine of their own: one
// goroutine per distinct selector set watches the agent cache, and a small pool of transient workers
// sends the new responses. A proxy that stops reading cannot hold a worker: a push still blocked after
// a second is left to finish on its own, the stream gets no other push meanwhile, and it is sent the
// latest secrets once the proxy reads again.
package sds
