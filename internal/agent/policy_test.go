package agent_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/authz/gitsync/gitsynctest"
)

func TestPolicyCommitsRollOutToAgents(t *testing.T) {
	ctx := context.Background()
	const frontend, payments = "spiffe://example.org/frontend", "spiffe://example.org/payments"
	repo := gitsynctest.New(t)
	repo.Commit(map[string]string{"data.json": `{"grants": [{"caller": "` + frontend + `", "target": "` + payments + `"}]}`})
	h := newHarness(t)
	h.policyRepo = repo.Dir
	h.startServer()
	h.startAgent()
	h.createEntry(frontend, 0, "unix:uid:1001")
	h.createEntry(payments, 0, "unix:uid:1002")
	conn, err := grpc.NewClient("unix://"+filepath.Join(h.dir, "authz.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := authv3.NewAuthorizationClient(conn)
	del := checkRequest(frontend, payments, "DELETE", "/x")
	waitDecision(t, c, del, code.Code_OK)

	sha := repo.Commit(map[string]string{"ext.rego": "package kith.ext\n\ndeny contains \"no deletes\" if input.kith.method == \"DELETE\"\n"})
	if r, err := h.srv.Admin().SyncPolicy(ctx, &adminv1.SyncPolicyRequest{}); err != nil || r.GetError() != "" {
		t.Fatalf("sync: %v %s", err, r.GetError())
	}
	waitDecision(t, c, del, code.Code_PERMISSION_DENIED)

	t.Run("the agent reports the revision it enforces", func(t *testing.T) {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			st, err := h.srv.Admin().GetPolicyStatus(ctx, &adminv1.GetPolicyStatusRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if len(st.GetAgents()) == 1 && st.GetAgents()[0].GetRevision() == sha {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Error("agent never reported the new revision")
	})

	t.Run("a broken commit leaves the agent on the last good policy", func(t *testing.T) {
		repo.Commit(map[string]string{"ext.rego": "package kith.ext\n\ndeny contains x if {\n"})
		r, err := h.srv.Admin().SyncPolicy(ctx, &adminv1.SyncPolicyRequest{})
		if err != nil || r.GetError() == "" {
			t.Fatalf("sync: %v %q", err, r.GetError())
		}
		waitDecision(t, c, del, code.Code_PERMISSION_DENIED)
	})
}
