package adminapi

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/internal/grantpb"
	"github.com/kithid/kith/internal/server/apierr"
	"github.com/kithid/kith/internal/store"
)

// MaxImportGrants bounds the grants of one ImportGrants request.
const MaxImportGrants = 200_000

// importKinds are the sources ImportGrants writes, by the prefix of their grant IDs.
var importKinds = map[string]string{"smi": "smi-", "istio": "istio-"}

// ImportGrants replaces the grants of an imported mesh policy (source "smi:" or "istio:", or a part of
// one such as "smi:default/") in one transaction, or with dry_run says what that would change. Importing
// the same grants again changes nothing and writes nothing.
func (s *Service) ImportGrants(ctx context.Context, req *adminv1.ImportGrantsRequest) (*adminv1.ImportGrantsResponse, error) {
	prefix := req.GetSource()
	kind, _, _ := strings.Cut(prefix, ":")
	idPrefix, ok := importKinds[kind]
	if !ok || !strings.Contains(prefix, ":") {
		return nil, apierr.Invalid(fmt.Sprintf("source %q: want smi: or istio: (or one namespace of them, smi:<namespace>/)", prefix))
	}
	if live := s.cfg.LiveMeshClusters; len(live) > 0 && !req.GetDryRun() {
		return nil, fmt.Errorf("%w: "+fmt.Sprintf("the server follows SMI and Istio policies live from cluster %s (controllers: true): "+
			"the cluster is the source of the smi: and istio: grants, and a file import would be replaced at its next change; "+
			"apply the file to the cluster instead (kubectl apply -f FILE), or use --dry-run to see what it holds", strings.Join(live, ", ")), store.ErrFailedPrecondition)
	}
	if len(req.GetGrants()) > MaxImportGrants {
		return nil, apierr.Invalid(fmt.Sprintf("%d grants, at most %d per import", len(req.GetGrants()), MaxImportGrants))
	}
	actor := s.cfg.Actor(ctx)
	next := make([]grant.Grant, 0, len(req.GetGrants()))
	seen := map[string]bool{}
	for _, pg := range req.GetGrants() {
		g := grantpb.FromAdmin(pg)
		g.CreatedBy, g.CreatedAt = actor, s.cfg.Now()
		switch {
		case !strings.HasPrefix(g.Source, prefix):
			return nil, apierr.Invalid(fmt.Sprintf("grant %s: source %q is not part of %s", g.ID, g.Source, prefix))
		case !strings.HasPrefix(g.ID, idPrefix):
			return nil, apierr.Invalid(fmt.Sprintf("grant %s: the ID of an imported %s grant starts with %s", g.ID, kind, idPrefix))
		case seen[g.ID]:
			return nil, apierr.Invalid(fmt.Sprintf("grant %s appears twice", g.ID))
		}
		seen[g.ID] = true
		for _, p := range []struct{ field, v string }{{"caller", g.Caller}, {"target", g.Target}} {
			if p.v == grant.AnyCaller && p.field == "caller" {
				continue
			}
			if _, err := s.parsePattern(p.field, p.v); err != nil {
				return nil, apierr.Invalid(fmt.Sprintf("grant %s (%s): %v", g.ID, g.Source, err))
			}
		}
		if err := g.Validate(); err != nil {
			return nil, apierr.Invalid(fmt.Sprintf("%v (%s)", err, g.Source))
		}
		next = append(next, g)
	}
	old := map[string]grant.Grant{}
	err := s.scanGrants(ctx, store.GrantKey{}, func(g grant.Grant) bool {
		if strings.HasPrefix(g.Source, prefix) {
			old[g.ID] = g
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	resp := &adminv1.ImportGrantsResponse{}
	for i, g := range next {
		o, ok := old[g.ID]
		switch {
		case !ok:
			resp.Added = append(resp.Added, s.grantProto(g))
		case !SameGrant(o, g):
			resp.Changed = append(resp.Changed, s.grantProto(g))
		default:
			next[i].CreatedAt, next[i].CreatedBy = o.CreatedAt, o.CreatedBy // unchanged: keeps its history
		}
		delete(old, g.ID)
	}
	for _, id := range slices.Sorted(maps.Keys(old)) {
		resp.Removed = append(resp.Removed, s.grantProto(old[id]))
	}
	if req.GetDryRun() || len(resp.Added)+len(resp.Changed)+len(resp.Removed) == 0 {
		return resp, nil
	}
	if err := s.cfg.Grants.ReplaceGrantsFromSource(ctx, actor, prefix, prefix, next); err != nil {
		return nil, fmt.Errorf("import %s grants: %w", prefix, err)
	}
	if resp.Revision, err = s.cfg.Audit.Revision(ctx); err != nil {
		return nil, fmt.Errorf("read revision: %w", err)
	}
	return resp, nil
}

// SameGrant reports whether a and b allow and deny the same, with the same reason and source (when and
// by whom they were made is not compared).
func SameGrant(a, b grant.Grant) bool {
	return a.ExpiresAt.Equal(b.ExpiresAt) && reflect.DeepEqual(normalized(a), normalized(b))
}

// normalized is g without its times and creator, with empty lists and maps as nil.
func normalized(g grant.Grant) grant.Grant {
	g.ExpiresAt, g.CreatedAt, g.CreatedBy = time.Time{}, time.Time{}, ""
	if len(g.Headers) == 0 {
		g.Headers = nil
	}
	for _, s := range []*[]string{&g.Methods, &g.Paths, &g.PathRegex, &g.NotMethods, &g.NotPaths, &g.NotCallers} {
		if len(*s) == 0 {
			*s = nil
		}
	}
	if len(g.Ports) == 0 {
		g.Ports = nil
	}
	return g
}
