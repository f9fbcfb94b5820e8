// Package link is the node agent's connection to the server for its unary calls (signing workload
// SVIDs, minting JWT-SVIDs, reporting status). The sync stream dials its own connection for each
// session; it tells the link when a session starts and ends, and the link is usable only in between, on
// a connection made for that session (so it presents the agent SVID of that session, and a server
// outage is seen by every caller at once, as the stream sees it).
package link

import (
	"errors"
	"sync"

	"google.golang.org/grpc"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
)

// Config builds a Link.
type Config struct {
	// Dial connects to the server with the agent's SVID; required. It must not block (grpc.NewClient).
	Dial func() (*grpc.ClientConn, error)
}

// Link is a connection to the server that exists while the agent is connected. Its owner calls Close
// when it stops.
type Link struct {
	cfg    Config
	mu     sync.Mutex
	up     bool
	conn   *grpc.ClientConn
	client agentv1.AgentServiceClient
}

// New makes a Link, down until Up.
func New(cfg Config) (*Link, error) {
	if cfg.Dial == nil {
		return nil, errors.New("link: dial is required")
	}
	return &Link{cfg: cfg}, nil
}

// Up marks the agent connected: the next Client dials a new connection.
func (l *Link) Up() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closeLocked()
	l.up = true
}

// Down marks the agent disconnected and closes the connection: calls in flight fail, and Client returns
// nil until Up.
func (l *Link) Down() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closeLocked()
	l.up = false
}

// Close closes the connection for good.
func (l *Link) Close() { l.Down() }

// Client is the client for the current session, nil while the agent is not connected or when dialling
// failed.
func (l *Link) Client() agentv1.AgentServiceClient {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.up {
		return nil
	}
	if l.client == nil {
		conn, err := l.cfg.Dial()
		if err != nil {
			return nil
		}
		l.conn, l.client = conn, agentv1.NewAgentServiceClient(conn)
	}
	return l.client
}

func (l *Link) closeLocked() {
	if l.conn != nil {
		l.conn.Close()
	}
	l.conn, l.client = nil, nil
}
