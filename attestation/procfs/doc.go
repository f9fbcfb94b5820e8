// Package procfs reads the small /proc files that workload attestation needs (a process's stat and
// status) into pooled buffers, so that attesting thousands of connections leaves no garbage behind, and
// parses a process's start time from its stat file. Peer credentials (attestation/peer) and the unix
// workload attestor share it. Reading is linux-only; parsing works everywhere.
package procfs
