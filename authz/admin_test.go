package authz_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kithid/kith/authz"
)

func TestAdminPolicy(t *testing.T) {
	scott := authz.AdminCaller{ID: "spiffe://td/user/scott", User: "scott", Labels: map[string]string{"team": "payments"}}
	ann := authz.AdminCaller{ID: "spiffe://td/user/ann", User: "ann", Roles: []string{"admin"}}
	eve := authz.AdminCaller{ID: "spiffe://td/user/eve", User: "eve", Labels: map[string]string{"team": "web"}}
	payments := &authz.AdminIdentity{ID: "spiffe://td/payments", Owners: []string{"scott"}}
	ledger := &authz.AdminIdentity{ID: "spiffe://td/ledger", OwnerTeams: []string{"payments"}}
	frontend := &authz.AdminIdentity{ID: "spiffe://td/frontend"}
	tests := []struct {
		name    string
		in      authz.AdminInput
		allowed bool
		why     string // a part of the reason, for refusals
	}{
		{"an owner by name may grant callers to their target", authz.AdminInput{Method: "CreateGrant", Caller: scott, Target: payments, Subject: frontend}, true, ""},
		{"an owner by team may set the mode of the team's target", authz.AdminInput{Method: "SetTargetMode", Caller: scott, Target: ledger}, true, ""},
		{"a non-owner may not grant, and is told who owns it", authz.AdminInput{Method: "CreateGrant", Caller: eve, Target: payments, Subject: frontend}, false, "eve is not an owner of spiffe://td/payments (its entries are labelled owner=scott)"},
		{"an admin may do anything", authz.AdminInput{Method: "RotateCA", Caller: ann}, true, ""},
		{"admin-only calls say so", authz.AdminInput{Method: "RotateCA", Caller: scott}, false, "RotateCA is for users with role admin"},
		{"anyone may ask whether they may call", authz.AdminInput{Method: "Can", Caller: eve, Subject: &authz.AdminIdentity{ID: eve.ID}, Target: payments}, true, ""},
		{"nobody may ask about others' calls to what they do not own", authz.AdminInput{Method: "Can", Caller: eve, Subject: frontend, Target: payments}, false, "may ask about identities they own or are"},
		{"a user mints JWT-SVIDs for themselves only", authz.AdminInput{Method: "MintJWTSVID", Caller: eve, Target: payments}, false, "for their own identity only"},
		{"whoami is for everyone", authz.AdminInput{Method: "WhoAmI", Caller: eve}, true, ""},
	}
	e, err := authz.NewAdmin()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := e.Decide(context.Background(), tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allowed != tt.allowed {
				t.Fatalf("allowed %v, want %v (%s)", d.Allowed, tt.allowed, d.Explain())
			}
			if tt.why != "" && !strings.Contains(d.Explain(), tt.why) {
				t.Errorf("reason %q does not say %q", d.Explain(), tt.why)
			}
		})
	}
}

func TestAdminPolicyExtension(t *testing.T) {
	e, err := authz.NewAdmin()
	if err != nil {
		t.Fatal(err)
	}
	err = e.SetPolicy(context.Background(), map[string]string{"admin.rego": `package kith.admin.ext
import rego.v1
deny contains "no changes on fridays" if input.request.friday
allow if {
	input.method == "ListAgents"
	input.caller.labels.team == "sre"
}
auto_approve if {
	input.caller.labels.oncall == "true"
	input.request.duration_seconds <= 7200
}
`})
	if err != nil {
		t.Fatal(err)
	}
	ann := authz.AdminCaller{ID: "spiffe://td/user/ann", User: "ann", Roles: []string{"admin"}}
	sre := authz.AdminCaller{ID: "spiffe://td/user/sam", User: "sam", Labels: map[string]string{"team": "sre", "oncall": "true"}}
	var got []authz.AdminDecision
	for _, in := range []authz.AdminInput{
		{Method: "RotateCA", Caller: ann, Request: map[string]any{"friday": true}},
		{Method: "ListAgents", Caller: sre},
		{Method: "CreateAccessRequest", Caller: sre, Request: map[string]any{"duration_seconds": 3600}},
	} {
		d, err := e.Decide(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, d)
	}
	want := []authz.AdminDecision{
		{Allowed: false, Reasons: []string{"policy denies it: no changes on fridays"}},
		{Allowed: true},
		{Allowed: true, AutoApprove: true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decisions (-want +got):\n%s", diff)
	}
}

func BenchmarkAdminDecide(b *testing.B) {
	e, err := authz.NewAdmin()
	if err != nil {
		b.Fatal(err)
	}
	in := authz.AdminInput{Method: "CreateGrant", Caller: authz.AdminCaller{ID: "spiffe://td/user/scott", User: "scott", Labels: map[string]string{"team": "payments"}},
		Target: &authz.AdminIdentity{ID: "spiffe://td/payments", Owners: []string{"scott"}}, Subject: &authz.AdminIdentity{ID: "spiffe://td/frontend"}}
	ctx := context.Background()
	for b.Loop() {
		if d, err := e.Decide(ctx, in); err != nil || !d.Allowed {
			b.Fatal(d, err)
		}
	}
}
