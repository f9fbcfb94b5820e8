package adminapi_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/catest"
	"github.com/kithid/kith/internal/server/adminapi"
	"github.com/kithid/kith/internal/server/adminapi/adminapitest"
	"github.com/kithid/kith/internal/server/apierr"
	"github.com/kithid/kith/internal/store"
	"github.com/kithid/kith/internal/store/sqlite"
	"github.com/kithid/kith/internal/testutil"
)

var td = spiffeid.RequireTrustDomainFromString("kith.test")

const (
	web      = "spiffe://kith.test/ns/prod/sa/web"
	payments = "spiffe://kith.test/ns/prod/sa/payments"
	node1    = "spiffe://kith.test/kith/agent/join_token/node1"
)

// harness is the admin API served over bufconn with the API edge's error mapping, on a real SQLite store
// that can be told to fail.
type harness struct {
	st     *adminapitest.Store
	policy *adminapitest.Policy
	clock  *testutil.Clock
	c      adminv1.AdminServiceClient
}

// newHarness starts the service; withPolicy gives it a policy administrator.
func newHarness(t *testing.T, withPolicy bool, opts ...func(*adminapi.Config)) *harness {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "kith.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	h := &harness{st: adminapitest.NewStore(db), clock: testutil.NewClock(time.Now().UTC().Truncate(time.Second))}
	cfg := adminapi.Config{
		TrustDomain: td, Entries: h.st, Tokens: h.st, Agents: h.st, Audit: h.st, Grants: h.st,
		CA: catest.NewCA(t, td), Decider: decider{}, Now: h.clock.Now,
		X509TTL: adminapi.TTLBounds{Min: time.Minute, Max: 24 * time.Hour},
		JWTTTL:  adminapi.TTLBounds{Min: time.Minute, Max: time.Hour},
	}
	if withPolicy {
		h.policy = &adminapitest.Policy{}
		cfg.Policy = h.policy
	}
	for _, o := range opts {
		o(&cfg)
	}
	svc, err := adminapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(apierr.UnaryInterceptor(slog.New(slog.DiscardHandler))))
	adminv1.RegisterAdminServiceServer(srv, svc)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///admin",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	h.c = adminv1.NewAdminServiceClient(conn)
	return h
}

// decider allows every request; the admin API only passes requests through to it.
type decider struct{}

func (decider) Decide(_ context.Context, in authz.Input) (authz.Decision, error) {
	return authz.Decision{Allowed: true, PolicyAllowed: true, Mode: authz.ModeEnforce, Reasons: []string{"test allows " + in.Caller.String()}}, nil
}

func (h *harness) revision(t *testing.T) int64 {
	t.Helper()
	rev, err := h.st.Revision(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// entry is a valid entry for web, changed by mod.
func entry(mod func(*adminv1.Entry)) *adminv1.Entry {
	e := &adminv1.Entry{SpiffeId: web, ParentId: node1, Selectors: []string{"unix:uid:1000"}}
	if mod != nil {
		mod(e)
	}
	return e
}

// pgrant is a valid grant from web to payments, changed by mod.
func pgrant(mod func(*adminv1.Grant)) *adminv1.Grant {
	g := &adminv1.Grant{Caller: web, Target: payments, Methods: []string{"GET"}, Paths: []string{"/api/*"}}
	if mod != nil {
		mod(g)
	}
	return g
}

// result is what a call came back with at the API edge.
type result struct {
	Code codes.Code
	Msg  string // a part of the message the caller sees
}

// check compares err with want: the same code, and a message containing want.Msg.
func check(t *testing.T, err error, want result) {
	t.Helper()
	got := result{Code: status.Code(err), Msg: want.Msg}
	if !strings.Contains(status.Convert(err).Message(), want.Msg) {
		got.Msg = status.Convert(err).Message()
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("error (-want +got):\n%s", diff)
	}
}

// Every request is validated before the store is touched, and refused as InvalidArgument with a message
// saying what is wrong.
func TestRequestValidation(t *testing.T) {
	h := newHarness(t, true)
	noPolicy := newHarness(t, false)
	ctx := context.Background()
	past := timestamppb.New(h.clock.Now().Add(-time.Hour))
	tests := []struct {
		name string
		call func(c adminv1.AdminServiceClient) error
		msg  string
	}{
		// Entries.
		{"an entry is required", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{})
			return err
		}, "entry is required"},
		{"an entry needs a spiffe id", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(func(e *adminv1.Entry) { e.SpiffeId = "" })})
			return err
		}, "spiffe_id is required"},
		{"an entry's spiffe id must parse", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(func(e *adminv1.Entry) { e.SpiffeId = "web" })})
			return err
		}, `spiffe_id "web" is not a valid SPIFFE ID`},
		{"an entry's spiffe id must be in the trust domain", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(func(e *adminv1.Entry) { e.SpiffeId = "spiffe://other.test/web" })})
			return err
		}, `is in trust domain "other.test" but this server's trust domain is "kith.test"`},
		{"an entry's spiffe id is at most 2,048 bytes", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(func(e *adminv1.Entry) { e.SpiffeId = "spiffe://kith.test/" + strings.Repeat("a", 3<<20) })})
			return err
		}, "spiffe_id is 3145747 bytes: a SPIFFE ID has at most 2048"},
		{"an entry has at most 64 selectors", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(func(e *adminv1.Entry) {
				for i := range 65 {
					e.Selectors = append(e.Selectors, fmt.Sprintf("unix:uid:%d", i))
				}
			})})
			return err
		}, "selectors: 66 given, at most 64 per entry"},
		{"an entry has at most 64 labels", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(func(e *adminv1.Entry) {
				e.Labels = map[string]string{}
				for i := range 65 {
					e.Labels[fmt.Sprintf("k%d", i)] = "v"
				}
			})})
			return err
		}, "labels: 65 given, at most 64 per entry"},
		{"a selector value is at most 1,024 bytes", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(func(e *adminv1.Entry) { e.Selectors = []string{"unix:user:" + strings.Repeat("u", 3<<20)} })})
			return err
		}, "the value is 3145728 bytes, at most 1024"},
		{"a grant reason is at most 1,024 bytes", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateGrant(ctx, &adminv1.CreateGrantRequest{Grant: pgrant(func(g *adminv1.Grant) { g.Reason = strings.Repeat("r", 3<<20) })})
			return err
		}, "reason of 3145728 bytes, at most 1024"},
		{"an entry's spiffe id needs a path", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(func(e *adminv1.Entry) { e.SpiffeId = "spiffe://kith.test" })})
			return err
		}, "has no path"},
		{"an entry may not use the reserved path", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(func(e *adminv1.Entry) { e.SpiffeId = "spiffe://kith.test/kith/agent/x" })})
			return err
		}, "reserved path /kith/"},
		{"an entry's parent must parse", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(func(e *adminv1.Entry) { e.ParentId = "node1" })})
			return err
		}, `parent_id "node1" is not a valid SPIFFE ID`},
		{"a selector must parse", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(func(e *adminv1.Entry) { e.Selectors = []string{"uid1000"} })})
			return err
		}, "uid1000"},
		{"a node selector must parse", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(func(e *adminv1.Entry) { e.ParentId, e.NodeSelectors = "", []string{"nope"} })})
			return err
		}, "node selector"},
		{"an entry needs a parent or node selectors", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(func(e *adminv1.Entry) { e.ParentId = "" })})
			return err
		}, "entry needs --parent"},
		{"an entry takes a parent or node selectors, not both", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(func(e *adminv1.Entry) { e.NodeSelectors = []string{"join_token:name:node1"} })})
			return err
		}, "either --parent or --node-selector, not both"},
		{"an entry needs a selector", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(func(e *adminv1.Entry) { e.Selectors = nil })})
			return err
		}, "at least one --selector"},
		{"an entry cannot be its own parent", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(func(e *adminv1.Entry) { e.ParentId = web })})
			return err
		}, "cannot be its own parent"},
		{"an x509 ttl below the minimum is refused", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(func(e *adminv1.Entry) { e.X509TtlSeconds = 30 })})
			return err
		}, "x509 ttl 30s is outside the allowed range 1m0s to 24h0m0s"},
		{"a negative x509 ttl is refused", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(func(e *adminv1.Entry) { e.X509TtlSeconds = -3600 })})
			return err
		}, "x509 ttl -1h0m0s is outside the allowed range"},
		{"a jwt ttl above the maximum is refused", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(func(e *adminv1.Entry) { e.JwtTtlSeconds = 7200 })})
			return err
		}, "jwt ttl 2h0m0s is outside the allowed range 1m0s to 1h0m0s"},
		{"an upper-case dns name is refused", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(func(e *adminv1.Entry) { e.DnsNames = []string{"Web.example"} })})
			return err
		}, `dns name "Web.example" is not a valid hostname`},
		{"an IP address is not a dns name", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(func(e *adminv1.Entry) { e.DnsNames = []string{"10.0.0.1"} })})
			return err
		}, `dns name "10.0.0.1" is not a valid hostname`},
		{"a wildcard is only a leading dns label", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(func(e *adminv1.Entry) { e.DnsNames = []string{"a.*.example"} })})
			return err
		}, `dns name "a.*.example" is not a valid hostname`},
		{"a label key must be a name", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(func(e *adminv1.Entry) { e.Labels = map[string]string{"-env": "dev"} })})
			return err
		}, `label key "-env" is invalid`},
		{"a label value has no newlines", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(func(e *adminv1.Entry) { e.Labels = map[string]string{"env": "dev\nprod"} })})
			return err
		}, "label env has an invalid value"},
		{"a batch names the bad entry", func(c adminv1.AdminServiceClient) error {
			_, err := c.BatchCreateEntries(ctx, &adminv1.BatchCreateEntriesRequest{Entries: []*adminv1.Entry{entry(nil), entry(func(e *adminv1.Entry) { e.Selectors = nil })}})
			return err
		}, "entry 1: entry needs at least one --selector"},
		{"an update needs the entry id", func(c adminv1.AdminServiceClient) error {
			_, err := c.UpdateEntry(ctx, &adminv1.UpdateEntryRequest{Entry: entry(nil)})
			return err
		}, "entry id is required"},
		{"an update is validated like a create", func(c adminv1.AdminServiceClient) error {
			_, err := c.UpdateEntry(ctx, &adminv1.UpdateEntryRequest{Entry: entry(func(e *adminv1.Entry) { e.Id, e.DnsNames = "x", []string{"-"} })})
			return err
		}, `dns name "-" is not a valid hostname`},
		{"a list filter by spiffe id must parse", func(c adminv1.AdminServiceClient) error {
			_, err := c.ListEntries(ctx, &adminv1.ListEntriesRequest{SpiffeId: "web"})
			return err
		}, `spiffe_id "web" is not a valid SPIFFE ID`},
		{"a list filter by parent must be in the trust domain", func(c adminv1.AdminServiceClient) error {
			_, err := c.ListEntries(ctx, &adminv1.ListEntriesRequest{ParentId: "spiffe://other.test/node"})
			return err
		}, "parent_id"},

		// Join tokens and agents.
		{"a token name is a path segment", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{Name: "node 1"})
			return err
		}, `token name "node 1" is invalid`},
		{"a token name starts with a letter or digit", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{Name: ".node"})
			return err
		}, `token name ".node" is invalid`},
		{"a token ttl under a minute is refused", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{TtlSeconds: 30})
			return err
		}, "token ttl 30s is outside the allowed range 1m0s to 720h0m0s"},
		{"a token ttl over the maximum is refused", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{TtlSeconds: 31 * 24 * 3600})
			return err
		}, "token ttl 744h0m0s is outside the allowed range"},
		{"an agent id must parse", func(c adminv1.AdminServiceClient) error {
			_, err := c.GetAgent(ctx, &adminv1.GetAgentRequest{Id: "node1"})
			return err
		}, `agent id "node1" is not a valid SPIFFE ID`},
		{"a token to revoke must be named", func(c adminv1.AdminServiceClient) error {
			_, err := c.RevokeJoinToken(ctx, &adminv1.RevokeJoinTokenRequest{})
			return err
		}, "token id is required: see the ID column of kith token list"},
		{"a token to revoke is named by its id, not its name", func(c adminv1.AdminServiceClient) error {
			_, err := c.RevokeJoinToken(ctx, &adminv1.RevokeJoinTokenRequest{Id: "node1"})
			return err
		}, `token id "node1" is invalid: it is the hex ID from kith token list`},
		{"an agent to ban must be named", func(c adminv1.AdminServiceClient) error {
			_, err := c.BanAgent(ctx, &adminv1.BanAgentRequest{})
			return err
		}, "agent id is required"},
		{"an agent to unban must be a spiffe id", func(c adminv1.AdminServiceClient) error {
			_, err := c.UnbanAgent(ctx, &adminv1.UnbanAgentRequest{Id: "node1"})
			return err
		}, `agent id "node1" is not a valid SPIFFE ID`},
		{"an agent to evict must be named", func(c adminv1.AdminServiceClient) error {
			_, err := c.EvictAgent(ctx, &adminv1.EvictAgentRequest{})
			return err
		}, "agent id is required"},

		// Minting.
		{"an x509-svid is not minted for a reserved id", func(c adminv1.AdminServiceClient) error {
			_, err := c.MintX509SVID(ctx, &adminv1.MintX509SVIDRequest{SpiffeId: node1, Csr: []byte("csr")})
			return err
		}, "reserved path"},
		{"an x509-svid needs a csr", func(c adminv1.AdminServiceClient) error {
			_, err := c.MintX509SVID(ctx, &adminv1.MintX509SVIDRequest{SpiffeId: web})
			return err
		}, "csr is required"},
		{"an x509-svid ttl is bounded", func(c adminv1.AdminServiceClient) error {
			_, err := c.MintX509SVID(ctx, &adminv1.MintX509SVIDRequest{SpiffeId: web, Csr: []byte("csr"), TtlSeconds: 48 * 3600})
			return err
		}, "ttl 48h0m0s is outside the allowed range"},
		{"an x509-svid's dns names are checked", func(c adminv1.AdminServiceClient) error {
			_, err := c.MintX509SVID(ctx, &adminv1.MintX509SVIDRequest{SpiffeId: web, Csr: []byte("csr"), DnsNames: []string{"a_b"}})
			return err
		}, `dns name "a_b"`},
		{"a jwt-svid needs an audience", func(c adminv1.AdminServiceClient) error {
			_, err := c.MintJWTSVID(ctx, &adminv1.MintJWTSVIDRequest{SpiffeId: web})
			return err
		}, "audience is required"},
		{"a jwt-svid audience is not empty", func(c adminv1.AdminServiceClient) error {
			_, err := c.MintJWTSVID(ctx, &adminv1.MintJWTSVIDRequest{SpiffeId: web, Audience: []string{"a", ""}})
			return err
		}, "audience must not be empty"},
		{"a jwt-svid ttl is bounded", func(c adminv1.AdminServiceClient) error {
			_, err := c.MintJWTSVID(ctx, &adminv1.MintJWTSVIDRequest{SpiffeId: web, Audience: []string{"a"}, TtlSeconds: 10})
			return err
		}, "ttl 10s is outside the allowed range"},

		// Grants, modes and can.
		{"a grant is required", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateGrant(ctx, &adminv1.CreateGrantRequest{})
			return err
		}, "grant is required"},
		{"a grant needs a caller", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateGrant(ctx, &adminv1.CreateGrantRequest{Grant: pgrant(func(g *adminv1.Grant) { g.Caller = "" })})
			return err
		}, "caller is required"},
		{"a grant's target must be a spiffe id", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateGrant(ctx, &adminv1.CreateGrantRequest{Grant: pgrant(func(g *adminv1.Grant) { g.Target = "payments" })})
			return err
		}, `target "payments" is not a valid SPIFFE ID`},
		{"a grant's caller must be in the trust domain", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateGrant(ctx, &adminv1.CreateGrantRequest{Grant: pgrant(func(g *adminv1.Grant) { g.Caller = "spiffe://other.test/*" })})
			return err
		}, "trust domain"},
		{"a wildcard is only a trailing /*", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateGrant(ctx, &adminv1.CreateGrantRequest{Grant: pgrant(func(g *adminv1.Grant) { g.Caller = "spiffe://kith.test/ns/*/sa/web" })})
			return err
		}, "caller"},
		{"a grant's method must be an http method", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateGrant(ctx, &adminv1.CreateGrantRequest{Grant: pgrant(func(g *adminv1.Grant) { g.Methods = []string{"FETCH"} })})
			return err
		}, `method "FETCH" is not an HTTP method`},
		{"a grant's path must be absolute", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateGrant(ctx, &adminv1.CreateGrantRequest{Grant: pgrant(func(g *adminv1.Grant) { g.Paths = []string{"api/*"} })})
			return err
		}, `path "api/*" must start with /`},
		{"a grant's path may not use **", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateGrant(ctx, &adminv1.CreateGrantRequest{Grant: pgrant(func(g *adminv1.Grant) { g.Paths = []string{"/api/**"} })})
			return err
		}, "not **"},
		{"a grant may not expire in the past", func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateGrant(ctx, &adminv1.CreateGrantRequest{Grant: pgrant(func(g *adminv1.Grant) { g.ExpiresAt = past })})
			return err
		}, "is in the past"},
		{"a revoke names a grant or a caller and target", func(c adminv1.AdminServiceClient) error {
			_, err := c.RevokeGrants(ctx, &adminv1.RevokeGrantsRequest{Caller: web})
			return err
		}, "give a grant ID, or a caller and a target"},
		{"a revoke of a caller and target without grants says so", func(c adminv1.AdminServiceClient) error {
			_, err := c.RevokeGrants(ctx, &adminv1.RevokeGrantsRequest{Caller: web, Target: payments})
			return err
		}, "no grant from " + web + " to " + payments},
		{"a target mode needs a valid target", func(c adminv1.AdminServiceClient) error {
			_, err := c.SetTargetMode(ctx, &adminv1.SetTargetModeRequest{Target: "payments", Mode: "audit"})
			return err
		}, `target "payments" is not a valid SPIFFE ID`},
		{"a target mode is enforce or audit", func(c adminv1.AdminServiceClient) error {
			_, err := c.SetTargetMode(ctx, &adminv1.SetTargetModeRequest{Target: payments, Mode: "loud"})
			return err
		}, `mode "loud": use enforce or audit`},
		{"can needs a valid caller", func(c adminv1.AdminServiceClient) error {
			_, err := c.Can(ctx, &adminv1.CanRequest{Caller: "web", Target: payments})
			return err
		}, `caller "web"`},
		{"can needs a target", func(c adminv1.AdminServiceClient) error {
			_, err := c.Can(ctx, &adminv1.CanRequest{Caller: web})
			return err
		}, "target is required"},
		{"can needs an absolute path", func(c adminv1.AdminServiceClient) error {
			_, err := c.Can(ctx, &adminv1.CanRequest{Caller: web, Target: payments, Path: "api"})
			return err
		}, `path "api" must start with /`},

		// Policy.
		{"a rollback names the revision", func(c adminv1.AdminServiceClient) error {
			_, err := c.RollbackPolicy(ctx, &adminv1.RollbackPolicyRequest{})
			return err
		}, "give the revision to roll back to"},
		{"policy verbs need policy management", func(adminv1.AdminServiceClient) error {
			_, err := noPolicy.c.GetPolicyStatus(ctx, &adminv1.GetPolicyStatusRequest{})
			return err
		}, "this server has no policy management"},
		{"a rollback needs policy management", func(adminv1.AdminServiceClient) error {
			_, err := noPolicy.c.RollbackPolicy(ctx, &adminv1.RollbackPolicyRequest{Revision: "r1"})
			return err
		}, "this server has no policy management"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := h.revision(t)
			check(t, tt.call(h.c), result{Code: codes.InvalidArgument, Msg: tt.msg})
			if after := h.revision(t); after != before {
				t.Errorf("a refused request moved the store revision from %d to %d", before, after)
			}
		})
	}
	if got := h.policy.RolledBack(); len(got) != 0 {
		t.Errorf("policy rolled back to %v by refused requests", got)
	}
}

// Grants from the policy repository cannot be revoked with the CLI.
func TestRevokingGitGrantsIsRefused(t *testing.T) {
	h := newHarness(t, false)
	ctx := context.Background()
	if err := h.st.ReplaceGrantsFromSource(ctx, "system", "git:", "git:abc", []grant.Grant{{ID: "git-1", Caller: web, Target: payments, Source: "git:abc"}}); err != nil {
		t.Fatal(err)
	}
	_, err := h.c.RevokeGrants(ctx, &adminv1.RevokeGrantsRequest{Id: "git-1"})
	check(t, err, result{Code: codes.InvalidArgument, Msg: "grant git-1 comes from the policy repository (git:abc)"})
	_, err = h.c.RevokeGrants(ctx, &adminv1.RevokeGrantsRequest{Caller: web, Target: payments})
	check(t, err, result{Code: codes.InvalidArgument, Msg: "(git-1) come from the policy repository"})
	if _, err := h.st.GetGrant(ctx, "git-1"); err != nil {
		t.Errorf("the git grant is gone: %v", err)
	}
}

// Entries the Kubernetes controller keeps and grants from KithGrants are not changed through the admin
// API: the controller would put them back, and the resource is where they are managed.
func TestKubernetesEntriesAndGrantsAreRefused(t *testing.T) {
	h := newHarness(t, false)
	ctx := context.Background()
	e, err := h.st.CreateEntry(ctx, "k8s", store.Entry{SPIFFEID: spiffeid.RequireFromString(payments),
		Selectors: []attestation.Selector{{Type: "k8s", Key: "pod-uid", Value: "u1"}}, Source: "k8s:kithidentity/all/prod/payments-1"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.c.DeleteEntry(ctx, &adminv1.DeleteEntryRequest{Id: e.ID})
	check(t, err, result{Code: codes.InvalidArgument, Msg: "comes from k8s:kithidentity/all/prod/payments-1: change or delete the Kubernetes resource"})
	pe := entryToProtoForTest(e)
	pe.DnsNames = []string{"x.example"}
	_, err = h.c.UpdateEntry(ctx, &adminv1.UpdateEntryRequest{Entry: pe})
	check(t, err, result{Code: codes.InvalidArgument, Msg: "comes from k8s:kithidentity/all/prod/payments-1"})
	if got, err := h.st.GetEntry(ctx, e.ID); err != nil || len(got.DNSNames) != 0 {
		t.Errorf("the entry changed: %+v, %v", got, err)
	}
	list, err := h.c.ListEntries(ctx, &adminv1.ListEntriesRequest{Source: "k8s"})
	if err != nil || len(list.GetEntries()) != 1 || list.GetEntries()[0].GetSource() != e.Source {
		t.Errorf("ListEntries(source k8s) = %v, %v; want the one entry with its source", list.GetEntries(), err)
	}
	if err := h.st.ReplaceGrantsFromSource(ctx, "k8s", "k8s:prod/web-to-payments", "k8s:prod/web-to-payments",
		[]grant.Grant{{ID: "k8s-1", Caller: web, Target: payments, Source: "k8s:prod/web-to-payments"}}); err != nil {
		t.Fatal(err)
	}
	_, err = h.c.RevokeGrants(ctx, &adminv1.RevokeGrantsRequest{Id: "k8s-1"})
	check(t, err, result{Code: codes.InvalidArgument, Msg: "comes from the KithGrant prod/web-to-payments (k8s:prod/web-to-payments): delete that resource"})
}

func entryToProtoForTest(e store.Entry) *adminv1.Entry {
	return &adminv1.Entry{Id: e.ID, SpiffeId: e.SPIFFEID.String(), Selectors: attestation.Strings(e.Selectors)}
}

// Store errors reach the caller as the gRPC code their sentinel stands for, whether the real store returns
// them or they are injected; anything else is Internal.
func TestStoreErrorsMapToCodes(t *testing.T) {
	ctx := context.Background()
	diskErr := errors.New("disk I/O error")
	tests := []struct {
		name  string
		setup func(t *testing.T, h *harness)
		call  func(c adminv1.AdminServiceClient) error
		want  result
	}{
		{"an unknown entry is not found", nil, func(c adminv1.AdminServiceClient) error {
			_, err := c.GetEntry(ctx, &adminv1.GetEntryRequest{Id: "nope"})
			return err
		}, result{codes.NotFound, `entry "nope": get entry nope: not found`}},
		{"updating an unknown entry is not found", nil, func(c adminv1.AdminServiceClient) error {
			_, err := c.UpdateEntry(ctx, &adminv1.UpdateEntryRequest{Entry: entry(func(e *adminv1.Entry) { e.Id = "nope" })})
			return err
		}, result{codes.NotFound, `update entry "nope"`}},
		{"deleting an unknown entry is not found", nil, func(c adminv1.AdminServiceClient) error {
			_, err := c.DeleteEntry(ctx, &adminv1.DeleteEntryRequest{Id: "nope"})
			return err
		}, result{codes.NotFound, `delete entry "nope"`}},
		{"a duplicate entry already exists", func(t *testing.T, h *harness) {
			if _, err := h.c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(nil)}); err != nil {
				t.Fatal(err)
			}
		}, func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(nil)})
			return err
		}, result{codes.AlreadyExists, "create entry for " + web}},
		{"a batch with a duplicate inside already exists", nil, func(c adminv1.AdminServiceClient) error {
			_, err := c.BatchCreateEntries(ctx, &adminv1.BatchCreateEntriesRequest{Entries: []*adminv1.Entry{entry(nil), entry(nil)}})
			return err
		}, result{codes.AlreadyExists, "create 2 entries"}},
		{"a token name in use already exists", func(t *testing.T, h *harness) {
			if _, err := h.c.CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{Name: "node1"}); err != nil {
				t.Fatal(err)
			}
		}, func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{Name: "node1"})
			return err
		}, result{codes.AlreadyExists, `already named "node1" and not used yet`}},
		{"an unknown agent is not found", nil, func(c adminv1.AdminServiceClient) error {
			_, err := c.GetAgent(ctx, &adminv1.GetAgentRequest{Id: node1})
			return err
		}, result{codes.NotFound, "agent " + node1}},
		{"evicting an unknown agent is not found", nil, func(c adminv1.AdminServiceClient) error {
			_, err := c.EvictAgent(ctx, &adminv1.EvictAgentRequest{Id: node1})
			return err
		}, result{codes.NotFound, "evict agent " + node1}},
		{"revoking an unknown token is not found", nil, func(c adminv1.AdminServiceClient) error {
			_, err := c.RevokeJoinToken(ctx, &adminv1.RevokeJoinTokenRequest{Id: "abc123"})
			return err
		}, result{codes.NotFound, "revoke join token abc123: not found (see kith token list)"}},
		{"revoking a used token is a failed precondition that says what to do instead", func(t *testing.T, h *harness) {
			h.st.Fail("RevokeJoinToken", fmt.Errorf("revoke join token abc123: it was already used by %s: %w", node1, store.ErrFailedPrecondition))
		}, func(c adminv1.AdminServiceClient) error {
			_, err := c.RevokeJoinToken(ctx, &adminv1.RevokeJoinTokenRequest{Id: "abc123"})
			return err
		}, result{codes.FailedPrecondition, "revoke join token abc123: it was already used by " + node1}},
		{"banning an unknown agent is not found", nil, func(c adminv1.AdminServiceClient) error {
			_, err := c.BanAgent(ctx, &adminv1.BanAgentRequest{Id: node1})
			return err
		}, result{codes.NotFound, "ban agent " + node1}},
		{"unbanning an unknown agent is not found", nil, func(c adminv1.AdminServiceClient) error {
			_, err := c.UnbanAgent(ctx, &adminv1.UnbanAgentRequest{Id: node1})
			return err
		}, result{codes.NotFound, "unban agent " + node1}},
		{"revoking an unknown grant is not found", nil, func(c adminv1.AdminServiceClient) error {
			_, err := c.RevokeGrants(ctx, &adminv1.RevokeGrantsRequest{Id: "g-nope"})
			return err
		}, result{codes.NotFound, "revoke: grant g-nope: not found (see kith grants list)"}},
		{"a ca refusal is an invalid argument", nil, func(c adminv1.AdminServiceClient) error {
			_, err := c.MintX509SVID(ctx, &adminv1.MintX509SVIDRequest{SpiffeId: web, Csr: []byte("not a csr")})
			return err
		}, result{codes.InvalidArgument, "mint x509-svid for " + web}},
		{"a policy revision the store does not know is not found", func(t *testing.T, h *harness) {
			h.policy.Err = fmt.Errorf("policy revision r9: %w", store.ErrNotFound)
		}, func(c adminv1.AdminServiceClient) error {
			_, err := c.RollbackPolicy(ctx, &adminv1.RollbackPolicyRequest{Revision: "r9"})
			return err
		}, result{codes.NotFound, "policy revision r9: not found"}},

		// Injected failures.
		{"a store failure is internal, with its context", func(t *testing.T, h *harness) { h.st.Fail("ListEntries", diskErr) },
			func(c adminv1.AdminServiceClient) error {
				_, err := c.ListEntries(ctx, &adminv1.ListEntriesRequest{})
				return err
			}, result{codes.Internal, "list entries: disk I/O error"}},
		{"a grant store failure is internal", func(t *testing.T, h *harness) { h.st.Fail("ListGrants", diskErr) },
			func(c adminv1.AdminServiceClient) error {
				_, err := c.ListGrants(ctx, &adminv1.ListGrantsRequest{})
				return err
			}, result{codes.Internal, "list grants: disk I/O error"}},
		{"a grant id taken already exists", func(t *testing.T, h *harness) {
			h.st.Fail("CreateGrant", fmt.Errorf("grant g-1: %w", store.ErrAlreadyExists))
		}, func(c adminv1.AdminServiceClient) error {
			_, err := c.CreateGrant(ctx, &adminv1.CreateGrantRequest{Grant: pgrant(nil)})
			return err
		}, result{codes.AlreadyExists, "create grant: grant g-1: already exists"}},
		{"a mode store failure is internal", func(t *testing.T, h *harness) { h.st.Fail("SetTargetMode", diskErr) },
			func(c adminv1.AdminServiceClient) error {
				_, err := c.SetTargetMode(ctx, &adminv1.SetTargetModeRequest{Target: payments, Mode: "audit"})
				return err
			}, result{codes.Internal, "set mode of " + payments + ": disk I/O error"}},
		{"a store that timed out is a deadline exceeded", func(t *testing.T, h *harness) { h.st.Fail("VerifyAudit", context.DeadlineExceeded) },
			func(c adminv1.AdminServiceClient) error {
				_, err := c.VerifyAudit(ctx, &adminv1.VerifyAuditRequest{})
				return err
			}, result{codes.DeadlineExceeded, "verify audit log"}},
		{"a cancelled store call is cancelled", func(t *testing.T, h *harness) { h.st.Fail("ListAudit", context.Canceled) },
			func(c adminv1.AdminServiceClient) error {
				_, err := c.ListAuditEvents(ctx, &adminv1.ListAuditEventsRequest{})
				return err
			}, result{codes.Canceled, "list audit events"}},
		{"a token the store calls invalid is permission denied", func(t *testing.T, h *harness) { h.st.Fail("CreateJoinToken", store.ErrTokenInvalid) },
			func(c adminv1.AdminServiceClient) error {
				_, err := c.CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{})
				return err
			}, result{codes.PermissionDenied, "join token is unknown, already used or expired"}}, // store errors name their operation; the API passes them on
		{"a revision that cannot be read is internal", func(t *testing.T, h *harness) { h.st.Fail("Revision", diskErr) },
			func(c adminv1.AdminServiceClient) error {
				_, err := c.GetServerInfo(ctx, &adminv1.GetServerInfoRequest{})
				return err
			}, result{codes.Internal, "read revision: disk I/O error"}},
		{"an evicting store failure is internal", func(t *testing.T, h *harness) { h.st.Fail("EvictAgent", diskErr) },
			func(c adminv1.AdminServiceClient) error {
				_, err := c.EvictAgent(ctx, &adminv1.EvictAgentRequest{Id: node1})
				return err
			}, result{codes.Internal, "disk I/O error"}}, // the store's own errors say "evict agent <id>: …"; an injected one is bare
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, true)
			if tt.setup != nil {
				tt.setup(t, h)
			}
			check(t, tt.call(h.c), tt.want)
		})
	}
}

// Listing grants by caller or target returns the grants that overlap the filter in either direction: a
// grant whose pattern covers the filter, or one the filter (itself a pattern) covers.
func TestListGrantsFilters(t *testing.T) {
	h := newHarness(t, false)
	ctx := context.Background()
	for _, g := range []grant.Grant{
		{ID: "exact", Caller: web, Target: payments},
		{ID: "prod", Caller: "spiffe://kith.test/ns/prod/*", Target: payments},
		{ID: "dev", Caller: "spiffe://kith.test/ns/dev/*", Target: "spiffe://kith.test/*"},
		{ID: "devil", Caller: "spiffe://kith.test/ns/devil/x", Target: payments},
	} {
		g.Source = "cli"
		if _, err := h.st.CreateGrant(ctx, "test", g); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name           string
		caller, target string
		want           []string
	}{
		{"no filter lists every grant", "", "", []string{"dev", "devil", "exact", "prod"}},
		{"an exact caller finds its own grants and the prefixes above it", web, "", []string{"exact", "prod"}},
		{"a caller prefix finds the grants below it", "spiffe://kith.test/ns/*", "", []string{"dev", "devil", "exact", "prod"}},
		{"a prefix does not find a sibling sharing its letters", "spiffe://kith.test/ns/dev/*", "", []string{"dev"}},
		{"a target finds the trust-domain prefix too", "", payments, []string{"dev", "devil", "exact", "prod"}},
		{"another target finds only the trust-domain prefix", "", "spiffe://kith.test/ns/prod/sa/orders", []string{"dev"}},
		{"caller and target filters both apply", "spiffe://kith.test/ns/dev/x", payments, []string{"dev"}},
		{"a caller nobody grants finds nothing", "spiffe://kith.test/ns/test/x", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := h.c.ListGrants(ctx, &adminv1.ListGrantsRequest{Caller: tt.caller, Target: tt.target})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, g := range resp.GetGrants() {
				got = append(got, g.GetId())
			}
			slices.Sort(got)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ListGrants(caller %q, target %q) (-want +got):\n%s", tt.caller, tt.target, diff)
			}
		})
	}
}

// A grant is stored as given, methods upper-cased, and comes back from the list.
func TestCreateGrant(t *testing.T) {
	h := newHarness(t, false)
	ctx := context.Background()
	exp := h.clock.Now().Add(8 * time.Hour)
	resp, err := h.c.CreateGrant(ctx, &adminv1.CreateGrantRequest{Grant: pgrant(func(g *adminv1.Grant) {
		g.Methods, g.ExpiresAt, g.Reason = []string{"get", "Post"}, timestamppb.New(exp), "checkout"
	})})
	if err != nil {
		t.Fatal(err)
	}
	got := resp.GetGrant()
	stored, err := h.st.GetGrant(ctx, got.GetId())
	if err != nil {
		t.Fatal(err)
	}
	want := grant.Grant{ID: got.GetId(), Caller: web, Target: payments, Methods: []string{"GET", "POST"}, Paths: []string{"/api/*"},
		ExpiresAt: exp, Reason: "checkout", CreatedBy: "admin", CreatedAt: stored.CreatedAt, Source: "cli"}
	if diff := cmp.Diff(want, stored); diff != "" {
		t.Errorf("stored grant (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(got.GetId(), "g-") || got.GetExpired() {
		t.Errorf("CreateGrant returned id %q, expired %v", got.GetId(), got.GetExpired())
	}
	if _, err := h.c.Can(ctx, &adminv1.CanRequest{Caller: web, Target: payments}); err != nil {
		t.Errorf("Can with valid IDs: %v", err)
	}
}

// A failing call names its operation once: the store's error already says what it was doing, and the
// API does not say it again ("create join token: create join token: …").
func TestErrorsNameTheOperationOnce(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, false)
	if _, err := h.c.CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{Name: "node1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(nil)}); err != nil {
		t.Fatal(err)
	}
	calls := map[string]func() error{
		"a token name in use": func() error {
			_, err := h.c.CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{Name: "node1"})
			return err
		},
		"a duplicate entry": func() error {
			_, err := h.c.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: entry(nil)})
			return err
		},
		"evicting an unknown agent": func() error {
			_, err := h.c.EvictAgent(ctx, &adminv1.EvictAgentRequest{Id: "spiffe://" + td.Name() + "/kith/agent/join_token/nope"})
			return err
		},
	}
	for name, call := range calls {
		err := call()
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		msg := status.Convert(err).Message()
		parts := strings.Split(msg, ": ")
		for i := 0; i+1 < len(parts); i++ {
			a, b := strings.Fields(parts[i]), strings.Fields(parts[i+1])
			if len(a) >= 2 && len(b) >= 2 && a[0] == b[0] && a[1] == b[1] {
				t.Errorf("%s: the message repeats %q: %s", name, a[0]+" "+a[1], msg)
			}
		}
	}
}

// Minting an SVID by hand is audited, with what identifies the certificate and never the token; a mint
// whose audit row cannot be written returns no SVID.
func TestMintingIsAudited(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, false)
	_, csr, err := ca.NewKeyAndCSR(spiffeid.RequireFromString(web))
	if err != nil {
		t.Fatal(err)
	}
	x, err := h.c.MintX509SVID(ctx, &adminv1.MintX509SVIDRequest{SpiffeId: web, Csr: csr, TtlSeconds: 600, DnsNames: []string{"web.internal"}})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(x.GetCertChain()[0])
	if err != nil {
		t.Fatal(err)
	}
	j, err := h.c.MintJWTSVID(ctx, &adminv1.MintJWTSVIDRequest{SpiffeId: web, Audience: []string{"orders"}})
	if err != nil {
		t.Fatal(err)
	}
	events, err := h.st.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ Action, Target string }
	var got []row
	var details []string
	for _, ev := range events {
		if strings.HasPrefix(ev.Action, "svid.mint") {
			got = append(got, row{ev.Action, ev.Target})
			details = append(details, ev.Detail)
		}
	}
	want := []row{{"svid.mint.x509", web}, {"svid.mint.jwt", web}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("mint audit rows (-want +got):\n%s", diff)
	}
	if !strings.Contains(details[0], leaf.SerialNumber.Text(16)) || !strings.Contains(details[0], "web.internal") {
		t.Errorf("x509 mint detail %s lacks the serial %s or the DNS name", details[0], leaf.SerialNumber.Text(16))
	}
	if !strings.Contains(details[1], "orders") || strings.Contains(details[1], j.GetToken()) {
		t.Errorf("jwt mint detail %s: want the audience and never the token", details[1])
	}
	if v, err := h.st.VerifyAudit(ctx); err != nil || !v.OK {
		t.Errorf("audit chain after minting: %+v %v", v, err)
	}

	h.st.Fail("Audit", errors.New("disk I/O error"))
	if resp, err := h.c.MintX509SVID(ctx, &adminv1.MintX509SVIDRequest{SpiffeId: web, Csr: csr}); err == nil || len(resp.GetCertChain()) > 0 {
		t.Errorf("x509 mint without its audit row: %v, %d certificates; want an error and none", err, len(resp.GetCertChain()))
	}
	if resp, err := h.c.MintJWTSVID(ctx, &adminv1.MintJWTSVIDRequest{SpiffeId: web, Audience: []string{"orders"}}); err == nil || resp.GetToken() != "" {
		t.Errorf("jwt mint without its audit row: %v; want an error and no token", err)
	}
}

// With the cluster's controllers following SMI and Istio policies, the cluster is the source of those grants:
// a file import is refused (it would be replaced at the cluster's next change), saying what to do instead; a
// dry run still answers.
func TestImportGrantsRefusedWhileTheClusterIsTheSource(t *testing.T) {
	h := newHarness(t, false, func(c *adminapi.Config) { c.LiveMeshClusters = []string{"prod"} })
	ctx := context.Background()
	g := &adminv1.Grant{Id: "smi-a", Caller: web, Target: payments, Paths: []string{"/api/*"}, Source: "smi:default/api"}
	_, err := h.c.ImportGrants(ctx, &adminv1.ImportGrantsRequest{Source: "smi:", Grants: []*adminv1.Grant{g}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "cluster prod") || !strings.Contains(err.Error(), "kubectl apply") {
		t.Fatalf("ImportGrants while cluster prod is followed: %v; want FailedPrecondition naming the cluster and kubectl apply", err)
	}
	if _, err := h.st.GetGrant(ctx, "smi-a"); err == nil {
		t.Error("the refused import wrote the grant")
	}
	resp, err := h.c.ImportGrants(ctx, &adminv1.ImportGrantsRequest{Source: "smi:", Grants: []*adminv1.Grant{g}, DryRun: true})
	if err != nil || len(resp.GetAdded()) != 1 {
		t.Errorf("dry run while cluster prod is followed = %v, %v; want one grant added", resp, err)
	}
}

func TestImportGrantsReplacesTheSourceAndIsIdempotent(t *testing.T) {
	h := newHarness(t, false)
	ctx := context.Background()
	if _, err := h.c.CreateGrant(ctx, &adminv1.CreateGrantRequest{Grant: pgrant(nil)}); err != nil {
		t.Fatal(err)
	}
	a := &adminv1.Grant{Id: "smi-a", Caller: web, Target: payments, PathRegex: []string{"/metrics"}, Methods: []string{"GET"}, Source: "smi:default/metrics", Reason: "route metrics"}
	b := &adminv1.Grant{Id: "smi-b", Caller: web, Target: payments, Paths: []string{"/api/*"}, Source: "smi:default/api"}
	ids := func(gs []*adminv1.Grant) []string {
		var out []string
		for _, g := range gs {
			out = append(out, g.GetId())
		}
		return out
	}
	type diff struct{ Added, Changed, Removed []string }
	imp := func(dry bool, gs ...*adminv1.Grant) diff {
		t.Helper()
		resp, err := h.c.ImportGrants(ctx, &adminv1.ImportGrantsRequest{Source: "smi:", Grants: gs, DryRun: dry})
		if err != nil {
			t.Fatal(err)
		}
		return diff{ids(resp.GetAdded()), ids(resp.GetChanged()), ids(resp.GetRemoved())}
	}
	if got := imp(true, a, b); !cmp.Equal(got, diff{Added: []string{"smi-a", "smi-b"}}) {
		t.Errorf("dry run = %+v", got)
	}
	if _, err := h.st.GetGrant(ctx, "smi-a"); err == nil {
		t.Error("a dry run wrote the grant")
	}
	if got := imp(false, a, b); !cmp.Equal(got, diff{Added: []string{"smi-a", "smi-b"}}) {
		t.Errorf("first import = %+v", got)
	}
	rev := h.revision(t)
	if got := imp(false, a, b); !cmp.Equal(got, diff{}) {
		t.Errorf("the same import again = %+v, want no change", got)
	}
	if h.revision(t) != rev {
		t.Errorf("the same import again wrote a revision")
	}
	a2 := proto.Clone(a).(*adminv1.Grant)
	a2.Methods = []string{"GET", "HEAD"}
	if got := imp(false, a2); !cmp.Equal(got, diff{Changed: []string{"smi-a"}, Removed: []string{"smi-b"}}) {
		t.Errorf("import without b = %+v", got)
	}
	list, err := h.c.ListGrants(ctx, &adminv1.ListGrantsRequest{Source: "smi:"})
	if err != nil || !cmp.Equal(ids(list.GetGrants()), []string{"smi-a"}) {
		t.Errorf("ListGrants(source smi:) = %v, %v", ids(list.GetGrants()), err)
	}
	_, err = h.c.RevokeGrants(ctx, &adminv1.RevokeGrantsRequest{Id: "smi-a"})
	check(t, err, result{Code: codes.InvalidArgument, Msg: "comes from the smi policy default/metrics (smi:default/metrics): import the policy again without it"})

	for _, tt := range []struct {
		name string
		req  *adminv1.ImportGrantsRequest
		msg  string
	}{
		{"a source other than smi: or istio: is refused", &adminv1.ImportGrantsRequest{Source: "cli"}, `source "cli": want smi: or istio:`},
		{"a grant outside the source is refused", &adminv1.ImportGrantsRequest{Source: "smi:", Grants: []*adminv1.Grant{{Id: "smi-x", Caller: web, Target: payments, Source: "istio:a/b"}}}, `source "istio:a/b" is not part of smi:`},
		{"an ID without the kind's prefix is refused", &adminv1.ImportGrantsRequest{Source: "smi:", Grants: []*adminv1.Grant{{Id: "g-x", Caller: web, Target: payments, Source: "smi:a/b"}}}, "starts with smi-"},
		{"a target outside the trust domain is refused", &adminv1.ImportGrantsRequest{Source: "smi:", Grants: []*adminv1.Grant{{Id: "smi-x", Caller: web, Target: "spiffe://other.test/x", Source: "smi:a/b"}}}, "grant smi-x (smi:a/b)"},
		{"an invalid grant is refused", &adminv1.ImportGrantsRequest{Source: "smi:", Grants: []*adminv1.Grant{{Id: "smi-x", Caller: web, Target: payments, PathRegex: []string{"(x"}, Source: "smi:a/b"}}}, "not an RE2 expression"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.c.ImportGrants(ctx, tt.req)
			check(t, err, result{Code: codes.InvalidArgument, Msg: tt.msg})
		})
	}
}
