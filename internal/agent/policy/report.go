package policy

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/authz"
)

// StatusReporter tells the server which policy revision the agent enforces, and what it holds and decided.
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
	// AuthzRevision is the revision of the authorization data applied, reported as the acknowledgement
	// `kith grant` and `kith revoke` count; zero: not reported.
	AuthzRevision func() int64
	// Activity returns the workload SVIDs the agent holds and its decision counts, sent with every report
	// and, when they changed, every ActivityEvery; zero: not reported.
	Activity func() ([]*agentv1.HeldSVID, []*agentv1.DecisionCount)
	// ActivityEvery is how often the Reporter looks whether the activity changed. Zero: 5s.
	ActivityEvery time.Duration
	Logger        *slog.Logger // zero: discard
}

// Reporter sends status reports one at a time from its Run; a report asked for while one is pending
// replaces it.
type Reporter struct {
	cfg     ReporterConfig
	mu      sync.Mutex
	errText string // why the last bundle was refused ("" when it was not), sent with every report
	pending bool   // a report is to be sent
	signal  chan struct{}

	// Activity: the number of the last report sent, and what the server acknowledged last (nil: send the
	// whole activity) through which client. Used by Run only.
	seq        uint64
	base       *activityBase
	baseClient StatusReporter
	lastWhole  []byte // the whole activity last sent to a server without deltas (marshalled): unchanged, not sent again
}

// activityBase is the activity of a report the server applied and said it takes deltas from.
type activityBase struct {
	seq       uint64
	svids     map[string]*agentv1.HeldSVID
	decisions map[[2]string]*agentv1.DecisionCount
}

func newActivityBase(seq uint64, svids []*agentv1.HeldSVID, decisions []*agentv1.DecisionCount) *activityBase {
	b := &activityBase{seq: seq, svids: make(map[string]*agentv1.HeldSVID, len(svids)), decisions: make(map[[2]string]*agentv1.DecisionCount, len(decisions))}
	for _, h := range svids {
		b.svids[h.GetEntryId()] = h
	}
	for _, d := range decisions {
		b.decisions[[2]string{d.GetCaller(), d.GetTarget()}] = d
	}
	return b
}

// delta returns what changed from b to svids and decisions.
func (b *activityBase) delta(svids []*agentv1.HeldSVID, decisions []*agentv1.DecisionCount) (changed []*agentv1.HeldSVID, removed []string, counts []*agentv1.DecisionCount) {
	held := make(map[string]bool, len(svids))
	for _, h := range svids {
		held[h.GetEntryId()] = true
		if old, ok := b.svids[h.GetEntryId()]; !ok || !proto.Equal(old, h) {
			changed = append(changed, h)
		}
	}
	for id := range b.svids {
		if !held[id] {
			removed = append(removed, id)
		}
	}
	slices.Sort(removed)
	for _, d := range decisions {
		if old, ok := b.decisions[[2]string{d.GetCaller(), d.GetTarget()}]; !ok || old.GetAllowed() != d.GetAllowed() || old.GetDenied() != d.GetDenied() {
			counts = append(counts, d)
		}
	}
	return changed, removed, counts
}

// NewReporter makes a Reporter; Run starts it.
func NewReporter(cfg ReporterConfig) (*Reporter, error) {
	if cfg.Revision == nil || cfg.Client == nil {
		return nil, errors.New("policy reporter: revision and client are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.AuthzRevision == nil {
		cfg.AuthzRevision = func() int64 { return 0 }
	}
	if cfg.ActivityEvery <= 0 {
		cfg.ActivityEvery = 5 * time.Second
	}
	return &Reporter{cfg: cfg, signal: make(chan struct{}, 1)}, nil
}

// Report asks for a report of the enforced revision and errText, the reason the last bundle was refused
// ("" when none was).
func (r *Reporter) Report(errText string) {
	r.mu.Lock()
	r.errText, r.pending = errText, true
	r.mu.Unlock()
	r.wake()
}

// Acknowledge asks for a report after new authorization data was applied, keeping the error text of the
// last Report.
func (r *Reporter) Acknowledge() {
	r.mu.Lock()
	r.pending = true
	r.mu.Unlock()
	r.wake()
}

func (r *Reporter) wake() {
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

// Run sends the reports until ctx is done.
func (r *Reporter) Run(ctx context.Context) error {
	var tick <-chan time.Time
	if r.cfg.Activity != nil {
		t := time.NewTicker(r.cfg.ActivityEvery)
		defer t.Stop()
		tick = t.C
	}
	for {
		onlyIfChanged := false
		select {
		case <-ctx.Done():
			return nil
		case <-r.signal:
		case <-tick:
			onlyIfChanged = true
		}
		r.mu.Lock()
		p, errText := r.pending, r.errText
		r.pending = false
		r.mu.Unlock()
		if !p && !onlyIfChanged {
			continue
		}
		if c := r.cfg.Client(); c != nil {
			r.send(ctx, c, errText, !p)
		}
	}
}

// send reports; onlyIfChanged sends only when the activity changed since the last report the server
// acknowledged. To a server that takes deltas, a report carries only what changed.
func (r *Reporter) send(ctx context.Context, c StatusReporter, errText string, onlyIfChanged bool) {
	rev := r.cfg.Revision()
	if rev == "" {
		rev = authz.BuiltinRevision
	}
	req := &agentv1.ReportStatusRequest{PolicyRevision: rev, PolicyError: errText, AuthzRevision: r.cfg.AuthzRevision()}
	var svids []*agentv1.HeldSVID
	var decisions []*agentv1.DecisionCount
	if r.cfg.Activity != nil {
		svids, decisions = r.cfg.Activity()
		if r.baseClient != c {
			r.base = nil // another connection, maybe another server: send everything
		}
		req.Activity, req.Svids, req.Decisions = true, svids, decisions
		if r.base == nil {
			whole, err := proto.MarshalOptions{Deterministic: true}.Marshal(&agentv1.ReportStatusRequest{Svids: svids, Decisions: decisions})
			if err == nil && onlyIfChanged && bytes.Equal(whole, r.lastWhole) {
				return
			}
			r.lastWhole = whole
		} else {
			changed, removed, counts := r.base.delta(svids, decisions)
			if onlyIfChanged && len(changed)+len(removed)+len(counts) == 0 {
				return
			}
			req.Svids, req.RemovedSvidEntryIds, req.Decisions, req.ActivityBaseSeq = changed, removed, counts, r.base.seq
		}
		r.seq++
		req.ActivitySeq = r.seq
	} else if onlyIfChanged {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := c.ReportStatus(ctx, req)
	switch {
	case err != nil:
		r.cfg.Logger.Debug("report status", "error", err)
		r.base, r.lastWhole = nil, nil // whether it was applied is not known: send everything at the next tick
	case r.cfg.Activity == nil:
	case resp.GetFullActivityWanted():
		r.base, r.lastWhole = nil, nil // the server lacks the report the delta followed: send everything now
		r.mu.Lock()
		r.pending = true
		r.mu.Unlock()
		r.wake()
	case resp.GetActivityDeltas():
		r.base, r.baseClient, r.lastWhole = newActivityBase(r.seq, svids, decisions), c, nil
	default:
		r.base = nil // a server that takes whole reports only: lastWhole keeps it from repeating them
	}
}
