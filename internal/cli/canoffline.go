package cli

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/gitsync"
)

// canOffline answers `kith can` with no server, as `opa eval` would: the same engine and explanation as
// the server's, from a policy directory (checked as `kith policy check` checks it) and/or a data file.
// Caller and target must be full SPIFFE IDs: without a server there are no short names.
func canOffline(ctx context.Context, callerArg, targetArg, method, path, dir, dataFile, decision string) (*adminv1.CanResponse, error) {
	caller, err := spiffeid.FromString(callerArg)
	if err != nil {
		return nil, fmt.Errorf("caller %q: offline, give a full SPIFFE ID (spiffe://...): %w", callerArg, err)
	}
	target, err := spiffeid.FromString(targetArg)
	if err != nil {
		return nil, fmt.Errorf("target %q: offline, give a full SPIFFE ID (spiffe://...): %w", targetArg, err)
	}
	cfg := authz.Config{Logger: slog.New(slog.DiscardHandler), WhatIf: true, Decision: decision}
	e, err := authz.New(cfg)
	if err != nil {
		return nil, err
	}
	data := authz.Data{Labels: map[string]map[string]string{}}
	revision := authz.BuiltinRevision
	if dir != "" {
		p, err := gitsync.Check(ctx, dir, cfg)
		if err != nil {
			return nil, fmt.Errorf("--policy-dir %s: %w", dir, err)
		}
		if err := e.SetPolicy(ctx, "dir:"+dir, p.Modules); err != nil {
			return nil, fmt.Errorf("--policy-dir %s: %w", dir, err)
		}
		revision = "dir:" + dir
		data.Grants = append(data.Grants, p.Grants...)
		maps.Copy(data.Labels, p.Labels)
	}
	if dataFile != "" {
		p, err := gitsync.ReadDataFile(dataFile)
		if err != nil {
			return nil, fmt.Errorf("--data %s: %w", dataFile, err)
		}
		data.Grants = append(data.Grants, p.Grants...)
		maps.Copy(data.Labels, p.Labels)
	}
	if err := e.SetData(ctx, data); err != nil {
		return nil, err
	}
	method = strings.ToUpper(method)
	if method == "" {
		method = "GET"
	}
	if path == "" {
		path = "/"
	}
	d, err := e.Decide(ctx, authz.Input{Caller: caller, Target: target, Method: method, Path: path})
	if err != nil {
		return nil, fmt.Errorf("evaluate: %w", err)
	}
	if d.Revision == "" {
		d.Revision = revision
	}
	return &adminv1.CanResponse{Allowed: d.Allowed, PolicyAllowed: d.PolicyAllowed, Reasons: d.Reasons, Mode: string(d.Mode),
		Headers: d.Headers, Grant: d.Grant, PolicyRevision: d.Revision}, nil
}
