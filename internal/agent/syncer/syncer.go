// Package syncer holds the node agent's Sync stream with the server: it connects with the agent SVID,
// renews that SVID on connecting once it is due (closing the stream at that time so that the next
// connection renews and presents the new one), hands each pushed message to the agent, and reconnects
// with backoff. When the server refuses the agent and a join token is configured, it attests again, once.
package syncer

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/internal/agent/rotation"
)

// Client is what one session calls on the server.
type Client interface {
	Sync(ctx context.Context, in *agentv1.SyncRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[agentv1.SyncResponse], error)
	rotation.Renewer
}

var _ Client = agentv1.AgentServiceClient(nil)

// AgentSVID is the agent's own SVID.
type AgentSVID interface {
	RenewAt() time.Time
	Renew(ctx context.Context, client rotation.Renewer) error
}

var _ AgentSVID = (*rotation.AgentSVID)(nil)

// Config builds a Syncer.
type Config struct {
	// Dial connects to the server with the agent SVID, for one session; required.
	Dial func() (Client, io.Closer, error)
	// AgentSVID is renewed when due; required.
	AgentSVID AgentSVID
	// Revision is the revision the agent holds, sent when connecting; required.
	Revision func() int64
	// Apply takes a pushed message, with Run's context (a message received is applied in full even when
	// the session ends for renewal meanwhile); an error is logged and the stream goes on. Required.
	Apply func(ctx context.Context, msg *agentv1.SyncResponse) error
	// Attest attests the agent again when the server refuses its SVID; zero: never (no join token).
	Attest func(ctx context.Context) error
	// Save persists the state after attesting again; zero: nothing.
	Save func() error
	// OnConnect is called once a session's stream is open, OnDisconnect when it ends; zero: nothing.
	OnConnect, OnDisconnect func()
	// OnError is called after a session that ended with err (it could not connect, or the stream broke),
	// before the wait to reconnect: the agent moves to another server there. Zero: nothing.
	OnError func(err error)
	// RetryMax caps the reconnect backoff, jitter included; zero: 5 s.
	RetryMax time.Duration
	Now      func() time.Time // zero: time.Now
	Logger   *slog.Logger     // zero: discard
}

// Syncer keeps the agent in sync; Run holds the stream.
type Syncer struct {
	cfg      Config
	rejoined bool      // attested again after the server refused the persisted svid
	lostAt   time.Time // when the last session broke; zero while connected or never broken
	synced   bool      // the last session received a message: its end starts the backoff afresh
}

// initialBackoff is the first wait before reconnecting, and the wait after a session that ended well.
const initialBackoff = 100 * time.Millisecond

// retryWait is the wait before the next attempt: backoff plus up to half again of jitter, but never more
// than max; at the cap it is spread over the last fifth below max, so that agents that lost the server
// together do not come back in step.
func retryWait(backoff, max time.Duration) time.Duration {
	d := backoff + rand.N(backoff/2+1)
	if d > max {
		d = max - rand.N(max/5+1)
	}
	return d
}

// New makes a Syncer; Run starts it.
func New(cfg Config) (*Syncer, error) {
	if cfg.Dial == nil || cfg.AgentSVID == nil || cfg.Revision == nil || cfg.Apply == nil {
		return nil, errors.New("syncer: dial, agent svid, revision and apply are required")
	}
	if cfg.Save == nil {
		cfg.Save = func() error { return nil }
	}
	if cfg.OnConnect == nil {
		cfg.OnConnect = func() {}
	}
	if cfg.OnDisconnect == nil {
		cfg.OnDisconnect = func() {}
	}
	if cfg.OnError == nil {
		cfg.OnError = func(error) {}
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMax = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Syncer{cfg: cfg}, nil
}

// Run holds the Sync stream, reconnecting with backoff, until ctx is done.
func (s *Syncer) Run(ctx context.Context) error {
	log := s.cfg.Logger
	backoff := initialBackoff
	for ctx.Err() == nil {
		s.synced = false
		err := s.once(ctx)
		if s.synced {
			// The session worked: a server that dies later (or the move to another one) is a first failure,
			// not the next step of an outage's backoff.
			backoff = initialBackoff
		}
		wait := retryWait(backoff, s.cfg.RetryMax)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			s.cfg.OnError(err)
		}
		if status.Code(err) == codes.PermissionDenied && s.cfg.Attest != nil && !s.rejoined {
			// Evicted (or unknown) but given a join token: attest again with it, once.
			s.rejoined = true
			log.Warn("server refused this agent's svid; attesting again with the configured join token", "error", err)
			if err := s.cfg.Attest(ctx); err != nil {
				log.Error("attest again", "error", err)
			} else if err := s.cfg.Save(); err != nil {
				log.Error("save agent state", "error", err)
			} else {
				backoff = initialBackoff
				continue
			}
		} else if status.Code(err) == codes.PermissionDenied {
			log.Error("server refused this agent; it keeps serving what it has until expiry. If it was evicted, restart it with a new --join-token", "error", err)
		} else if err != nil {
			log.Warn("sync with server interrupted; retrying", "error", err, "retry_in", wait)
			if s.lostAt.IsZero() {
				s.lostAt = s.cfg.Now()
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, s.cfg.RetryMax)
		if err == nil {
			backoff = initialBackoff
		}
	}
	return nil
}

// once connects with the current agent SVID, streams sync messages, and returns when the stream breaks
// or the SVID must be renewed (after which the caller reconnects with the new one).
func (s *Syncer) once(ctx context.Context) error {
	client, conn, err := s.cfg.Dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx) // the session's: cancelled at renewal time
	defer cancel()

	renewAt := s.cfg.AgentSVID.RenewAt()
	if !s.cfg.Now().Before(renewAt) {
		return s.cfg.AgentSVID.Renew(sctx, client)
	}
	stream, err := client.Sync(sctx, &agentv1.SyncRequest{Revision: s.cfg.Revision()})
	if err != nil {
		return err
	}
	s.cfg.OnConnect()
	defer s.cfg.OnDisconnect()

	renewTimer := time.AfterFunc(renewAt.Sub(s.cfg.Now()), cancel)
	defer renewTimer.Stop()
	for {
		msg, err := stream.Recv()
		if err != nil {
			if sctx.Err() != nil && !s.cfg.Now().Before(renewAt) {
				return nil // time to renew: reconnect
			}
			return err
		}
		s.synced = true
		if !s.lostAt.IsZero() {
			s.cfg.Logger.Info("sync with server restored", "down_for", s.cfg.Now().Sub(s.lostAt).Round(time.Millisecond))
			s.lostAt = time.Time{}
		}
		if err := s.cfg.Apply(ctx, msg); err != nil {
			s.cfg.Logger.Error("apply sync message", "error", err, "revision", msg.GetRevision())
		}
	}
}
