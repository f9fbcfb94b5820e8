package unixsock

import (
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"
)

// Allow lists whose processes may connect: a peer is allowed when its uid is in UIDs or its primary gid
// (the one SO_PEERCRED reports; supplementary groups are not seen) is in GIDs.
type Allow struct {
	UIDs, GIDs []uint32
}

// Permits reports whether a peer with uid and gid is allowed.
func (a Allow) Permits(uid, gid uint32) bool {
	return slices.Contains(a.UIDs, uid) || slices.Contains(a.GIDs, gid)
}

// String is the list as logs and errors show it: "uids [0 1000] gids []".
func (a Allow) String() string { return fmt.Sprintf("uids %v gids %v", a.UIDs, a.GIDs) }

// RestrictConfig configures [Restrict].
type RestrictConfig struct {
	// Name is the socket in log messages ("admin socket"). Zero: "unix socket".
	Name string
	// Allow is who may connect. Zero: nobody.
	Allow Allow
	// Logger gets one warning per refused connection, at most one per LogEvery (with the number of
	// refusals not logged since). Zero: slog.Default().
	Logger *slog.Logger
	// LogEvery spaces the warnings. Zero: 10 s.
	LogEvery time.Duration
	// OnRefuse is called for every refused connection, e.g. to count it. Zero: nothing.
	OnRefuse func()
	// Now is the clock for LogEvery. Zero: time.Now.
	Now func() time.Time
}

// Restrict returns a listener whose Accept reads each connection's peer credentials (SO_PEERCRED) and
// closes, without a byte exchanged, every connection from a process cfg.Allow does not permit, or whose
// credentials cannot be read. It does not depend on the socket file's mode: a socket left 0777 by mistake
// still refuses other users. l must accept unix connections.
func Restrict(l net.Listener, cfg RestrictConfig) net.Listener {
	if cfg.Name == "" {
		cfg.Name = "unix socket"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LogEvery == 0 {
		cfg.LogEvery = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &restricted{Listener: l, cfg: cfg}
}

type restricted struct {
	net.Listener
	cfg RestrictConfig

	mu         sync.Mutex
	lastLog    time.Time
	suppressed int
}

func (r *restricted) Accept() (net.Conn, error) {
	for {
		c, err := r.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			c.Close()
			r.refuse(fmt.Sprintf("connection is %T, not a unix socket", c))
			continue
		}
		id, err := peerIDs(uc)
		if err != nil {
			c.Close()
			r.refuse("read peer credentials: "+err.Error(), "error", err)
			continue
		}
		if !r.cfg.Allow.Permits(id.uid, id.gid) {
			c.Close()
			r.refuse("uid and gid not allowed", "uid", id.uid, "gid", id.gid, "pid", id.pid, "allowed", r.cfg.Allow.String())
			continue
		}
		return c, nil
	}
}

func (r *restricted) refuse(why string, attrs ...any) {
	if r.cfg.OnRefuse != nil {
		r.cfg.OnRefuse()
	}
	now := r.cfg.Now()
	r.mu.Lock()
	if !r.lastLog.IsZero() && now.Sub(r.lastLog) < r.cfg.LogEvery {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	r.lastLog, attrs = now, append(attrs, "not_logged_since_last", r.suppressed)
	r.suppressed = 0
	r.mu.Unlock()
	r.cfg.Logger.Warn(r.cfg.Name+" refused a connection: "+why, attrs...)
}

// ids are a peer's SO_PEERCRED.
type ids struct {
	pid      int32
	uid, gid uint32
}
