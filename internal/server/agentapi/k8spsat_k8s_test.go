//go:build k8s

package agentapi

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/node"
	"github.com/kithid/kith/attestation/node/k8spsat"
	"github.com/kithid/kith/internal/config"
	"github.com/kithid/kith/internal/kubernetes/kubetest"
	"github.com/kithid/kith/internal/server/attestors"
	"github.com/kithid/kith/internal/store"
)

// k8s_psat against a real kube-apiserver: tokens come from the TokenRequest API, bound to pods on
// nodes, and the server checks them with only the RBAC docs/attestors/k8s_psat.md lists.
func TestK8sPSATAttestation(t *testing.T) {
	kc := kubetest.Start(t)
	node1 := kc.Node(t, "node-1", map[string]string{"topology.kubernetes.io/zone": "zone-a", "team": "anyone-can-set-this"})
	agentPod := kc.Pod(t, kubetest.PodSpec{Namespace: "kith", Name: "kith-agent-x1", ServiceAccount: "kith-agent", Node: "node-1", Labels: map[string]string{"app": "kith-agent"}})
	builderPod := kc.Pod(t, kubetest.PodSpec{Namespace: "kith", Name: "builder", ServiceAccount: "builder", Node: "node-1"})
	doomedPod := kc.Pod(t, kubetest.PodSpec{Namespace: "kith", Name: "kith-agent-doomed", ServiceAccount: "kith-agent", Node: "node-1"})

	// The server reaches the cluster as a user with only: create tokenreviews, get pods, get nodes.
	kc.Grant(t, "kith-server",
		kubetest.Rule{Group: "", Resources: []string{"pods", "nodes"}, Verbs: []string{"get"}},
		kubetest.Rule{Group: "authentication.k8s.io", Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
	)
	psat, err := attestors.K8sPSAT(td, []config.K8sCluster{{
		Name: "test", Kubeconfig: kc.UserKubeConfigFile(t, "kith-server"), Audience: "kith",
		ServiceAccounts: []string{"kith:kith-agent"}, NodeLabelKeys: []string{"topology.kubernetes.io/zone"}, PodLabelKeys: []string{"app"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarnessWith(t, map[string]node.Attestor{k8spsat.Type: psat})
	ctx := context.Background()
	attest := func(t *testing.T, token string) (*x509svid.SVID, error) {
		t.Helper()
		key, csr := newCSR(t)
		payload, _ := json.Marshal(k8spsat.Payload{Cluster: "test", Token: token})
		resp, err := h.anon(t).Attest(ctx, &agentv1.AttestRequest{AttestationType: k8spsat.Type, Payload: payload, Csr: csr})
		if err != nil {
			return nil, err
		}
		return svidOf(t, resp.GetSvidChain(), key), nil
	}
	wantID := spiffeid.RequireFromPath(td, "/kith/agent/k8s_psat/test/"+string(node1.UID))
	good := kc.Token(t, "kith", "kith-agent", kubetest.TokenOptions{Pod: agentPod})

	var first *x509svid.SVID
	t.Run("a token bound to the agent's pod on its node is accepted", func(t *testing.T) {
		first, err = attest(t, good)
		if err != nil {
			t.Fatalf("Attest: %v", err)
		}
		if first.ID != wantID {
			t.Errorf("agent id %s, want %s", first.ID, wantID)
		}
		a, err := h.st.GetAgent(ctx, wantID)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{
			"k8s_psat:agent_node_label:topology.kubernetes.io/zone:zone-a", // team is not a configured key
			"k8s_psat:agent_node_name:node-1", "k8s_psat:agent_node_uid:" + string(node1.UID),
			"k8s_psat:agent_ns:kith", "k8s_psat:agent_pod_label:app:kith-agent", "k8s_psat:agent_pod_name:kith-agent-x1",
			"k8s_psat:agent_pod_uid:" + string(agentPod.UID), "k8s_psat:agent_sa:kith-agent", "k8s_psat:cluster:test",
		}
		if got := attestation.Strings(a.Selectors); !slices.Equal(got, want) {
			t.Errorf("agent selectors\n got %v\nwant %v", got, want)
		}
	})

	t.Run("re-attesting the node replaces its agent record", func(t *testing.T) {
		if first == nil {
			t.Skip("the first attestation failed")
		}
		// A new agent pod on the same node (a DaemonSet rollout) with its own token.
		newPod := kc.Pod(t, kubetest.PodSpec{Namespace: "kith", Name: "kith-agent-x2", ServiceAccount: "kith-agent", Node: "node-1"})
		second, err := attest(t, kc.Token(t, "kith", "kith-agent", kubetest.TokenOptions{Pod: newPod}))
		if err != nil {
			t.Fatalf("Attest again: %v", err)
		}
		if second.ID != wantID {
			t.Errorf("second agent id %s, want the node's %s", second.ID, wantID)
		}
		agents, err := h.st.ListAgents(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var psatAgents []store.Agent
		for _, a := range agents {
			if a.AttestationType == k8spsat.Type {
				psatAgents = append(psatAgents, a)
			}
		}
		if len(psatAgents) != 1 || psatAgents[0].SerialNumber != second.Certificates[0].SerialNumber.Text(16) {
			t.Fatalf("agents after re-attestation = %+v, want one, with the second SVID's serial", psatAgents)
		}
		if !slices.Contains(attestation.Strings(psatAgents[0].Selectors), "k8s_psat:agent_pod_name:kith-agent-x2") {
			t.Errorf("the record keeps the old pod's selectors: %v", psatAgents[0].Selectors)
		}
		_, csr := newCSR(t)
		_, err = h.as(t, first).RenewAgent(ctx, &agentv1.RenewAgentRequest{Csr: csr})
		if err == nil {
			t.Error("the replaced SVID still renews")
		}
	})

	refusals := []struct {
		name   string
		token  func(t *testing.T) string
		reason []string // one of
	}{
		{
			name: "a token for another audience",
			token: func(t *testing.T) string {
				return kc.Token(t, "kith", "kith-agent", kubetest.TokenOptions{Audience: "vault", Pod: agentPod})
			},
			reason: []string{"token not authenticated by the api server: "},
		},
		{
			name:   "a token bound to no pod",
			token:  func(t *testing.T) string { return kc.Token(t, "kith", "kith-agent", kubetest.TokenOptions{}) },
			reason: []string{"token is not bound to a pod (use a projected service-account token)"},
		},
		{
			name: "an expired token",
			token: func(t *testing.T) string {
				return kc.ResignToken(t, good, func(c map[string]any) {
					past := time.Now().Add(-2 * time.Hour).Unix()
					c["iat"], c["nbf"], c["exp"] = past, past, past+600
				})
			},
			reason: []string{"token not authenticated by the api server: "},
		},
		{
			name: "a token of a service account outside the allow-list",
			token: func(t *testing.T) string {
				return kc.Token(t, "kith", "builder", kubetest.TokenOptions{Pod: builderPod})
			},
			reason: []string{"service account not allowed"},
		},
		{
			name: "a token whose pod was deleted",
			token: func(t *testing.T) string {
				tok := kc.Token(t, "kith", "kith-agent", kubetest.TokenOptions{Pod: doomedPod})
				kc.DeletePod(t, doomedPod)
				return tok
			},
			// The API server refuses a token whose bound pod is gone; were it slow to see the deletion,
			// the attestor's own read of the pod refuses it.
			reason: []string{"token not authenticated by the api server: ", "pod not found"},
		},
	}
	for _, tt := range refusals {
		t.Run("refused: "+tt.name, func(t *testing.T) {
			_, err := attest(t, tt.token(t))
			wantCode(t, "Attest", err, codes.PermissionDenied)
			ev, detail := lastAudit(t, h)
			if ev.Action != "agent.attest.refused" {
				t.Fatalf("last audit event %s, want agent.attest.refused", ev.Action)
			}
			reason, _ := detail["reason"].(string)
			if !slices.ContainsFunc(tt.reason, func(r string) bool { return reason == r || strings.HasSuffix(r, ": ") && strings.HasPrefix(reason, r) }) {
				t.Errorf("audited reason %q, want one of %q", reason, tt.reason)
			}
			if detail["cluster"] != "test" {
				t.Errorf("audit detail %v does not name the cluster", detail)
			}
		})
	}

	// The re-signed token is refused for its expiry alone: re-signed unexpired, it is accepted.
	t.Run("a re-signed token that has not expired is accepted", func(t *testing.T) {
		tok := kc.ResignToken(t, good, func(c map[string]any) { c["exp"] = time.Now().Add(30 * time.Minute).Unix() })
		if _, err := attest(t, tok); err != nil {
			t.Fatalf("Attest: %v", err)
		}
	})
}
