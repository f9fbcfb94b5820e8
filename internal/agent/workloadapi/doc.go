// Package workloadapi serves the SPIFFE Workload API on the node agent's unix socket.
//
// A [Handler] implements the gRPC service spiffe.workload.SpiffeWorkloadAPI, wire-compatible with
// go-spiffe's workloadapi client, spiffe-helper and Envoy-less SPIFFE libraries. For every call it
// requires the "workload.spiffe.io: true" metadata header, takes the caller's unix peer credentials
// from the connection (the gRPC server must use peer.TransportCredentials), attests them to
// selectors, and answers from the agent's cache:
//
//	FetchX509SVID     stream of the caller's X.509-SVIDs, keys and bundles, pushed on every change
//	FetchX509Bundles  stream of the X.509 trust bundles, pushed when a bundle changes
//	FetchJWTBundles   stream of the JWT bundles (JWKS), pushed when a bundle changes
//	FetchJWTSVID      JWT-SVIDs for the caller's identities and the requested audience
//	ValidateJWTSVID   checks a JWT-SVID against the trust bundle and an audience
//
// Errors are gRPC statuses: InvalidArgument for a missing security header or a bad request,
// PermissionDenied when attestation fails or the caller has no identity, Unavailable while the
// agent has no trust bundle yet or cannot mint a JWT-SVID.
package workloadapi
