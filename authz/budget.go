package authz

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// hotRule evaluates p on input v once more, traced, for as long as the evaluation budget, and names the
// rule most of the time went to: " (most of the time in rule data.kith.ext.deny, ext.rego:3)", or ""
// when nothing was traced. It is only called for a policy over its budget, so the tracing costs nothing
// otherwise.
func (e *Engine) hotRule(ctx context.Context, p *policy, v ast.Value, compiler *ast.Compiler) string {
	ctx, cancel := context.WithTimeout(ctx, e.evalBudget)
	defer cancel()
	tr := &lineTimer{spent: map[location]time.Duration{}}
	opts, stop := e.evalOptions(ctx, p, v)
	_, _ = p.query.Eval(ctx, append(opts, rego.EvalQueryTracer(tr))...)
	stop()
	tr.event(nil)
	var hot location
	for l, d := range tr.spent {
		if l.file != "" && (d > tr.spent[hot] || d == tr.spent[hot] && (l.file < hot.file || l.file == hot.file && l.row < hot.row)) {
			hot = l
		}
	}
	if hot.file == "" {
		return ""
	}
	m := compiler.Modules[hot.file]
	if m != nil {
		for _, r := range m.Rules {
			if r.Location == nil {
				continue
			}
			first := r.Location.Row
			last := first + strings.Count(string(r.Location.Text), "\n")
			if first <= hot.row && hot.row <= last {
				return fmt.Sprintf(" (most of the time in rule %s.%s, %s:%d)", m.Package.Path, r.Head.Ref(), hot.file, hot.row)
			}
		}
	}
	return fmt.Sprintf(" (most of the time in %s:%d)", hot.file, hot.row)
}

type location struct {
	file string
	row  int
}

// lineTimer adds the time from each traced evaluation step to the next to the source line of the step,
// so a line whose built-in calls are slow gets their time too.
type lineTimer struct {
	spent map[location]time.Duration
	last  location
	at    time.Time
}

var _ topdown.QueryTracer = (*lineTimer)(nil)

func (*lineTimer) Enabled() bool { return true }

func (*lineTimer) Config() topdown.TraceConfig { return topdown.TraceConfig{} }

func (t *lineTimer) TraceEvent(ev topdown.Event) { t.event(ev.Location) }

// event ends the current step and, for a non-nil l, starts one at l.
func (t *lineTimer) event(l *ast.Location) {
	now := time.Now()
	if !t.at.IsZero() {
		t.spent[t.last] += now.Sub(t.at)
	}
	t.at = now
	if l != nil {
		t.last = location{l.File, l.Row}
	}
}
