// Package unix attests workloads that connect to the node agent over a unix socket.
//
// When the agent accepts a connection it captures the peer's credentials from the socket
// (SO_PEERCRED: pid, uid, gid) together with the process start time from /proc/<pid>/stat,
// with package attestation/peer. Gathering happens while the peer is still connected, so the
// pid is the connecting process.
//
// [Attestor.Attest] turns those [peer.Credentials] into selectors:
//
//	unix:uid:1000
//	unix:gid:1000
//	unix:user:app
//	unix:group:app
//	unix:supplementary_gid:27
//	unix:path:/usr/local/bin/app
//	unix:sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//
// The executable is read through /proc/<pid>/exe, so a file replaced on disk after the
// process started does not change the hash. Hashes are cached by the identity of the
// opened file (device, inode, size, modification and change times), never by path alone.
//
// After reading, Attest re-checks that the pid still belongs to the process that connected
// (same start time). If the process exited or the pid was reused it returns an error
// wrapping [ErrProcessChanged] and no selectors, so a new process cannot borrow the
// identity of one that has gone.
package unix
