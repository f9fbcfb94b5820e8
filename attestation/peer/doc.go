// Package peer captures the credentials of the process at the other end of a unix socket connection:
// its pid, uid and gid (SO_PEERCRED), its start time from /proc/<pid>/stat and the executable it runs,
// read when the connection is accepted, while the peer is still connected.
//
// gRPC servers on a unix socket use [TransportCredentials], and handlers read the caller's
// [Credentials] with [FromContext]; other servers call [PeerCredentials] on the accepted connection.
// The node agent's Workload API and SDS socket and the server's admin socket are served this way, and
// workload attestors (attestation/workload/unix) derive selectors from the credentials.
//
// Capturing credentials is linux-only; elsewhere [PeerCredentials] returns an error.
package peer
