package peer

import (
	"context"
	"errors"
	"fmt"
	"net"

	"google.golang.org/grpc/credentials"
	grpcpeer "google.golang.org/grpc/peer"
)

// ErrProcessChanged reports that the pid no longer belongs to the process that connected.
var ErrProcessChanged = errors.New("workload process exited or was replaced during attestation")

// Credentials are a unix socket peer's credentials captured when the connection was accepted.
type Credentials struct {
	PID       int32
	UID, GID  uint32
	StartTime uint64 // process start time in clock ticks since boot, /proc/<pid>/stat field 22, read at accept time
	// Exe is the file the process was executing when the connection was accepted; zero when it could not be
	// read. A process that has executed another program since is refused (exec keeps the pid and the start
	// time), and unix:path and unix:sha256 are only given when Exe is known.
	Exe FileID
}

// FileID identifies a file by device and inode.
type FileID struct{ Dev, Ino uint64 }

// Known reports whether f was read.
func (f FileID) Known() bool { return f != FileID{} }

// AuthInfo is the gRPC AuthInfo attached to connections accepted with [TransportCredentials].
type AuthInfo struct {
	credentials.CommonAuthInfo
	Credentials Credentials
}

// AuthType reports "unix".
func (AuthInfo) AuthType() string { return authType }

const authType = "unix"

// TransportCredentials returns gRPC transport credentials for a server listening on a unix socket.
// ServerHandshake reads the peer's credentials with [PeerCredentials] and attaches them to the
// connection as an [AuthInfo]; connections that are not unix sockets are refused. It does no
// encryption: the socket's file permissions and the kernel protect the channel.
// ClientHandshake is not supported.
func TransportCredentials() credentials.TransportCredentials { return transportCreds{} }

type transportCreds struct{}

var _ credentials.TransportCredentials = transportCreds{}

func (transportCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("unix peer credentials are server-side only: use insecure credentials on the client")
}

func (transportCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return nil, nil, fmt.Errorf("read peer credentials: connection from %s is %T, not a unix socket", conn.RemoteAddr(), conn)
	}
	creds, err := PeerCredentials(uc)
	if err != nil {
		return nil, nil, err
	}
	return conn, AuthInfo{
		// A unix socket is local to the kernel; like grpc's local credentials, treat it as private.
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		Credentials:    creds,
	}, nil
}

func (transportCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: authType}
}

func (t transportCreds) Clone() credentials.TransportCredentials { return t }

func (transportCreds) OverrideServerName(string) error { return nil }

// FromContext returns the caller's Credentials from a gRPC handler context. It reports false when
// the connection was not accepted with [TransportCredentials].
func FromContext(ctx context.Context) (Credentials, bool) {
	p, ok := grpcpeer.FromContext(ctx)
	if !ok || p == nil {
		return Credentials{}, false
	}
	switch ai := p.AuthInfo.(type) {
	case AuthInfo:
		return ai.Credentials, true
	case *AuthInfo:
		if ai != nil {
			return ai.Credentials, true
		}
	}
	return Credentials{}, false
}
