package policy

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/authz"
)

// StatusReporter tells the server which policy revision the agent enforces.
type StatusReporter interface {
	ReportStatus(ctx context.Context, in *agentv1.ReportStatusRequest, opts ...grpc.CallOption) (*agentv1.ReportStatusResponse, error)
}

var _ StatusReporter = agentv1.AgentServiceClient(nil)

// ReporterConfig builds a Reporter.
type ReporterConfig struct {
	// Revision is the revision enforced; required.
	Revision func() string
	// Client returns the client to report with, or nil while the agent is not connected (the report is
	// then dropped: the next connection reports again); required.
	Client func() StatusReporter
	Logger *slog.Logger // zero: discard
}

// Reporter sends status reports one at a time from its Run; a report asked for while one is pending
// replaces it.
type Reporter struct {
	cfg     ReporterConfig
	mu      sync.Mutex
	pending *string // error text of the report to send, nil when none
	signal  chan struct{}
}

// NewReporter makes a Reporter; Run starts it.
func NewReporter(cfg ReporterConfig) (*Reporter, error) {
	if cfg.Revision == nil || cfg.Client == nil {
		return nil, errors.New("policy reporter: revision and client are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Reporter{cfg: cfg, signal: make(chan struct{}, 1)}, nil
}

// Report asks for a report of the enforced revision and errText, the reason the last bundle was refused
// ("" when none was).
func (r *Reporter) Report(errText string) {
	r.mu.Lock()
	r.pending = &errText
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

// Run sends the reports until ctx is done.
func (r *Reporter) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.signal:
		}
		r.mu.Lock()
		p := r.pending
		r.pending = nil
		r.mu.Unlock()
		if p == nil {
			continue
		}
		if c := r.cfg.Client(); c != nil {
			r.send(ctx, c, *p)
		}
	}
}

func (r *Reporter) send(ctx context.Context, c StatusReporter, errText string) {
	rev := r.cfg.Revision()
	if rev == "" {
		rev = authz.BuiltinRevision
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.ReportStatus(ctx, &agentv1.ReportStatusRequest{PolicyRevision: rev, PolicyError: errText}); err != nil {
		r.cfg.Logger.Debug("report policy status", "error", err)
	}
}
