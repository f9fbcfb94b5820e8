// Package grantpb converts authorization grants between their Go form (grant.Grant) and the
// agent API's message, for the server that sends them and the agent that receives them.
package grantpb

import (
	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/authz/grant"
)

// ToProto converts a grant for the agent API.
func ToProto(g grant.Grant) *agentv1.Grant {
	pg := &agentv1.Grant{Id: g.ID, Caller: g.Caller, Target: g.Target, Methods: g.Methods, Paths: g.Paths,
		Reason: g.Reason, CreatedBy: g.CreatedBy, Source: g.Source}
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
		Reason: pg.GetReason(), CreatedBy: pg.GetCreatedBy(), Source: pg.GetSource()}
	if pg.GetExpiresAt() != nil {
		g.ExpiresAt = pg.GetExpiresAt().AsTime()
	}
	if pg.GetCreatedAt() != nil {
		g.CreatedAt = pg.GetCreatedAt().AsTime()
	}
	return g
}
