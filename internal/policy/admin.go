package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/gitsync"
	"github.com/kithid/kith/internal/server/apierr"
	"github.com/kithid/kith/internal/store"
)

func attemptProto(b store.PolicyBundle) *adminv1.PolicyAttempt {
	return &adminv1.PolicyAttempt{Revision: b.Revision, CreatedAt: timestamppb.New(b.CreatedAt), Status: b.Status, Error: b.Error}
}

// PolicyStatus reports the policy in force, where it comes from, the last attempt, any pin, and the
// revision each agent enforces.
func (p *Policy) PolicyStatus(ctx context.Context) (*adminv1.GetPolicyStatusResponse, error) {
	rev, _ := p.Policy()
	if rev == "" {
		rev = authz.BuiltinRevision
	}
	out := &adminv1.GetPolicyStatusResponse{ActiveRevision: rev}
	switch {
	case p.cfg.Source.Git.URL != "":
		ref := p.cfg.Source.Git.Ref
		if ref == "" {
			ref = "HEAD" // what an empty ref follows: the remote's HEAD
		}
		out.Source = p.cfg.Source.Git.URL + "@" + ref
	case p.cfg.Source.Dir != "":
		out.Source = p.cfg.Source.Dir
	}
	hist, err := p.cfg.Store.PolicyHistory(ctx, 1)
	if err != nil {
		return nil, err
	}
	if len(hist) > 0 {
		out.LastAttempt = attemptProto(hist[0])
	}
	if active, err := p.cfg.Store.ActivePolicy(ctx); err == nil && active.Pinned {
		out.PinnedRevision = active.Revision
	}
	agents, err := p.cfg.Store.AgentPolicies(ctx)
	if err != nil {
		return nil, err
	}
	for _, a := range agents {
		out.Agents = append(out.Agents, &adminv1.AgentPolicy{AgentId: a.AgentID, Revision: a.Revision, Since: timestamppb.New(a.Since), Error: a.Error})
	}
	return out, nil
}

// PolicyHistory returns the newest limit policy attempts, newest first.
func (p *Policy) PolicyHistory(ctx context.Context, limit int) ([]*adminv1.PolicyAttempt, error) {
	hist, err := p.cfg.Store.PolicyHistory(ctx, limit)
	if err != nil {
		return nil, err
	}
	out := make([]*adminv1.PolicyAttempt, len(hist))
	for i, h := range hist {
		out[i] = attemptProto(h)
	}
	return out, nil
}

// SyncPolicy fetches the policy repository now and returns the commit in force.
func (p *Policy) SyncPolicy(ctx context.Context) (string, error) {
	if p.syncer == nil {
		return "", errors.New("no policy repository configured (policy.git.url)")
	}
	return p.syncer.Sync(ctx)
}

// minRevisionPrefix is the shortest revision prefix rollback accepts, as git does.
const minRevisionPrefix = 4

// RollbackPolicy puts an earlier good revision in force, pinned until the next sync or unpin, and returns
// it. revision may be any unambiguous prefix (at least 4 characters) of a revision in the history.
func (p *Policy) RollbackPolicy(ctx context.Context, actor, revision string) (string, error) {
	hist, err := p.cfg.Store.PolicyHistory(ctx, 1000)
	if err != nil {
		return "", err
	}
	full, err := resolveRevision(hist, revision)
	if err != nil {
		return "", err
	}
	for _, h := range hist {
		if h.Revision == full && h.Status == store.PolicyOK {
			a, err := p.cfg.Store.ActivatePolicy(ctx, actor, full, true)
			if err != nil {
				return "", err
			}
			return full, p.setPolicy(ctx, a.Revision, a.Modules)
		}
	}
	return "", fmt.Errorf("policy revision %s: %w: roll back only to a revision listed ok by kith policy history", full, store.ErrNotFound)
}

// resolveRevision returns the revision in hist that rev names: the revision itself or, as git does, the one
// revision it is a prefix of (at least minRevisionPrefix characters).
func resolveRevision(hist []store.PolicyBundle, rev string) (string, error) {
	var matches []string
	seen := map[string]bool{}
	for _, h := range hist {
		if h.Revision == rev {
			return rev, nil
		}
		if strings.HasPrefix(h.Revision, rev) && !seen[h.Revision] {
			seen[h.Revision] = true
			matches = append(matches, h.Revision)
		}
	}
	switch {
	case len(rev) < minRevisionPrefix:
		return "", apierr.Invalid(fmt.Sprintf("policy revision %q is too short: give at least %d characters of a revision listed by kith policy history", rev, minRevisionPrefix))
	case len(matches) == 0:
		return "", fmt.Errorf("policy revision %s: %w: roll back only to a revision listed ok by kith policy history", rev, store.ErrNotFound)
	case len(matches) > 1:
		sort.Strings(matches)
		return "", apierr.Invalid(fmt.Sprintf("policy revision %q is ambiguous: it starts %s; give more characters", rev, strings.Join(matches, ", ")))
	}
	return matches[0], nil
}

// UnpinPolicy ends a rollback: the newest good revision is in force again, and returned with unpinned
// true. When nothing is pinned it changes nothing and returns the revision in force.
func (p *Policy) UnpinPolicy(ctx context.Context, actor string) (string, bool, error) {
	a, unpinned, err := p.cfg.Store.UnpinPolicy(ctx, actor)
	if err != nil {
		return "", false, err
	}
	if !unpinned {
		rev, _ := p.Policy()
		if rev == "" {
			rev = authz.BuiltinRevision
		}
		return rev, false, nil
	}
	return a.Revision, true, p.setPolicy(ctx, a.Revision, a.Modules)
}

// ServeWebhook triggers a sync when the request is signed with the webhook secret. In order: a body over
// gitsync.MaxWebhookBody is refused (413) before anything else; a missing or wrong signature (401); a
// timestamp header too far from now (400); a delivery already received within the replay window, by its
// delivery ID or its body and signature, is refused with 409 and triggers nothing (Git senders do not
// retry on 4xx, and the repository is polled anyway).
func (p *Policy) ServeWebhook(w http.ResponseWriter, r *http.Request) {
	if p.syncer == nil || p.cfg.Source.Git.WebhookSecret == "" {
		http.Error(w, "policy webhook not configured (policy.git.webhook_secret)", http.StatusNotFound)
		return
	}
	tooLarge := func() {
		p.log.Warn("policy webhook body over the limit", "remote", r.RemoteAddr, "limit_bytes", gitsync.MaxWebhookBody)
		http.Error(w, fmt.Sprintf("webhook body over %d bytes: refused", gitsync.MaxWebhookBody), http.StatusRequestEntityTooLarge)
	}
	if r.ContentLength > gitsync.MaxWebhookBody {
		tooLarge()
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, gitsync.MaxWebhookBody))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		tooLarge()
		return
	case err != nil:
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	if !gitsync.VerifyWebhook(p.cfg.Source.Git.WebhookSecret, r.Header, body) {
		p.log.Warn("policy webhook with a missing or wrong signature", "remote", r.RemoteAddr)
		http.Error(w, "missing or wrong webhook signature", http.StatusUnauthorized)
		return
	}
	if err := p.replays.CheckTime(r.Header); err != nil {
		p.log.Warn("policy webhook refused", "remote", r.RemoteAddr, "error", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if by, first, replayed := p.replays.Record(r.Header, body); replayed {
		p.log.Warn("policy webhook delivery replayed: ignored", "remote", r.RemoteAddr, "known_by", by, "first_received", first)
		http.Error(w, fmt.Sprintf("delivery already received at %s (%s): ignored; deliveries are remembered for %s",
			first.UTC().Format(time.RFC3339), by, p.replays.Window()), http.StatusConflict)
		return
	}
	p.syncer.Trigger()
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write([]byte("sync triggered\n"))
}
