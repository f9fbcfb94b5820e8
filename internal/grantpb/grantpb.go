// Package grantpb converts authorization grants between their Go form (grant.Grant) and the API
// messages: the agent API's, for the server that sends them and the agent that receives them, and the
// admin API's, for the server and the CLI.
package grantpb

import (
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/authz/grant"
)

// ToProto converts a grant for the agent API.
func ToProto(g grant.Grant) *agentv1.Grant {
	pg := &agentv1.Grant{Id: g.ID, Caller: g.Caller, Target: g.Target, Methods: g.Methods, Paths: g.Paths,
		Reason: g.Reason, CreatedBy: g.CreatedBy, Source: g.Source,
		PathRegex: g.PathRegex, Headers: g.Headers, Ports: g.Ports, NotMethods: g.NotMethods, NotPaths: g.NotPaths,
		NotCallers: g.NotCallers, Deny: g.Deny}
	if !g.ExpiresAt.IsZero() {
		pg.ExpiresAt = timestamppb.New(g.ExpiresAt)
	}
	if !g.CreatedAt.IsZero() {
		pg.CreatedAt = timestamppb.New(g.CreatedAt)
	}
	return pg
}

// FromProto converts a grant from the agent API.
func FromProto(pg *agentv1.Grant) grant.Grant {
	g := grant.Grant{ID: pg.GetId(), Caller: pg.GetCaller(), Target: pg.GetTarget(), Methods: pg.GetMethods(), Paths: pg.GetPaths(),
		Reason: pg.GetReason(), CreatedBy: pg.GetCreatedBy(), Source: pg.GetSource(),
		PathRegex: pg.GetPathRegex(), Headers: nilIfEmpty(pg.GetHeaders()), Ports: pg.GetPorts(), NotMethods: pg.GetNotMethods(),
		NotPaths: pg.GetNotPaths(), NotCallers: pg.GetNotCallers(), Deny: pg.GetDeny()}
	if pg.GetExpiresAt() != nil {
		g.ExpiresAt = pg.GetExpiresAt().AsTime()
	}
	if pg.GetCreatedAt() != nil {
		g.CreatedAt = pg.GetCreatedAt().AsTime()
	}
	return g
}

// ToAdmin converts a grant for the admin API (without its Expired flag, which depends on the clock).
func ToAdmin(g grant.Grant) *adminv1.Grant {
	pg := &adminv1.Grant{Id: g.ID, Caller: g.Caller, Target: g.Target, Methods: g.Methods, Paths: g.Paths,
		Reason: g.Reason, CreatedBy: g.CreatedBy, Source: g.Source,
		PathRegex: g.PathRegex, Headers: g.Headers, Ports: g.Ports, NotMethods: g.NotMethods, NotPaths: g.NotPaths,
		NotCallers: g.NotCallers, Deny: g.Deny}
	if !g.ExpiresAt.IsZero() {
		pg.ExpiresAt = timestamppb.New(g.ExpiresAt)
	}
	if !g.CreatedAt.IsZero() {
		pg.CreatedAt = timestamppb.New(g.CreatedAt)
	}
	return pg
}

// FromAdmin converts a grant from the admin API.
func FromAdmin(pg *adminv1.Grant) grant.Grant {
	g := grant.Grant{ID: pg.GetId(), Caller: pg.GetCaller(), Target: pg.GetTarget(), Methods: pg.GetMethods(), Paths: pg.GetPaths(),
		Reason: pg.GetReason(), CreatedBy: pg.GetCreatedBy(), Source: pg.GetSource(),
		PathRegex: pg.GetPathRegex(), Headers: nilIfEmpty(pg.GetHeaders()), Ports: pg.GetPorts(), NotMethods: pg.GetNotMethods(),
		NotPaths: pg.GetNotPaths(), NotCallers: pg.GetNotCallers(), Deny: pg.GetDeny()}
	if pg.GetExpiresAt() != nil {
		g.ExpiresAt = pg.GetExpiresAt().AsTime()
	}
	if pg.GetCreatedAt() != nil {
		g.CreatedAt = pg.GetCreatedAt().AsTime()
	}
	return g
}

func nilIfEmpty(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}
