package k8spsat_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/node"
	"github.com/kithid/kith/attestation/node/k8spsat"
)

// fakeKube is a cluster's API server: it knows tokens, pods and nodes.
type fakeKube struct {
	reviews map[string]k8spsat.Review // by token; the audience must be in Audiences
	pods    map[string]*corev1.Pod    // by namespace/name
	nodes   map[string]*corev1.Node
	err     error // returned by every call when set
}

func (f *fakeKube) ReviewToken(_ context.Context, token string, auds []string) (k8spsat.Review, error) {
	if f.err != nil {
		return k8spsat.Review{}, f.err
	}
	r, ok := f.reviews[token]
	if !ok {
		return k8spsat.Review{Error: "invalid bearer token"}, nil
	}
	var in []string
	for _, a := range auds {
		for _, b := range r.Audiences {
			if a == b {
				in = append(in, a)
			}
		}
	}
	if len(in) == 0 {
		return k8spsat.Review{Error: "token audiences are invalid"}, nil
	}
	r.Audiences = in
	return r, nil
}

func (f *fakeKube) GetPod(_ context.Context, ns, name string) (*corev1.Pod, error) {
	if f.err != nil {
		return nil, f.err
	}
	if p, ok := f.pods[ns+"/"+name]; ok {
		return p, nil
	}
	return nil, k8spsat.ErrNotFound
}

func (f *fakeKube) GetNode(_ context.Context, name string) (*corev1.Node, error) {
	if f.err != nil {
		return nil, f.err
	}
	if n, ok := f.nodes[name]; ok {
		return n, nil
	}
	return nil, k8spsat.ErrNotFound
}

const (
	podUID  = "6f1c5c1e-0000-4000-8000-000000000001"
	nodeUID = "0a3d9e2b-0000-4000-8000-000000000002"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func review(podName, podUID, nodeName, nodeUID string) k8spsat.Review {
	extra := map[string][]string{}
	if podName != "" {
		extra["authentication.kubernetes.io/pod-name"] = []string{podName}
		extra["authentication.kubernetes.io/pod-uid"] = []string{podUID}
	}
	if nodeName != "" {
		extra["authentication.kubernetes.io/node-name"] = []string{nodeName}
		extra["authentication.kubernetes.io/node-uid"] = []string{nodeUID}
	}
	return k8spsat.Review{Authenticated: true, Username: "system:serviceaccount:kith:kith-agent", Extra: extra, Audiences: []string{"kith"}}
}

func world() *fakeKube {
	other := review("agent-1", podUID, "node-1", nodeUID)
	other.Username = "system:serviceaccount:default:builder"
	user := review("agent-1", podUID, "node-1", nodeUID)
	user.Username = "alice"
	otherAud := review("agent-1", podUID, "node-1", nodeUID)
	otherAud.Audiences = []string{"vault"}
	return &fakeKube{
		reviews: map[string]k8spsat.Review{
			"good":          review("agent-1", podUID, "node-1", nodeUID),
			"old-node-info": review("agent-1", podUID, "", ""), // a server before node info in tokens
			"unbound":       review("", "", "", ""),
			"other-sa":      other,
			"user":          user,
			"vault":         otherAud,
			"gone-pod":      review("agent-2", "6f1c5c1e-0000-4000-8000-000000000009", "node-1", nodeUID),
			"replaced-pod":  review("agent-1", "6f1c5c1e-0000-4000-8000-00000000000a", "node-1", nodeUID),
			"moved-node":    review("agent-1", podUID, "node-2", nodeUID),
			"replaced-node": review("agent-1", podUID, "node-1", "0a3d9e2b-0000-4000-8000-00000000000b"),
			"unscheduled":   review("agent-3", "6f1c5c1e-0000-4000-8000-000000000003", "", ""),
			"other-pod-sa":  review("agent-4", "6f1c5c1e-0000-4000-8000-000000000004", "node-1", nodeUID),
			"no-node":       review("agent-5", "6f1c5c1e-0000-4000-8000-000000000005", "", ""),
		},
		pods: map[string]*corev1.Pod{
			"kith/agent-1": pod("agent-1", podUID, "kith-agent", "node-1"),
			"kith/agent-3": pod("agent-3", "6f1c5c1e-0000-4000-8000-000000000003", "kith-agent", ""),
			"kith/agent-4": pod("agent-4", "6f1c5c1e-0000-4000-8000-000000000004", "default", "node-1"),
			"kith/agent-5": pod("agent-5", "6f1c5c1e-0000-4000-8000-000000000005", "kith-agent", "node-gone"),
		},
		nodes: map[string]*corev1.Node{
			"node-1": {ObjectMeta: metav1.ObjectMeta{Name: "node-1", UID: nodeUID, Labels: map[string]string{"zone": "a", "kubernetes.io/os": "linux"}}},
		},
	}
}

func pod(name, uid, sa, nodeName string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kith", Name: name, UID: typesUID(uid), Labels: map[string]string{"app": "kith-agent"}},
		Spec:       corev1.PodSpec{ServiceAccountName: sa, NodeName: nodeName},
	}
}

func newAttestor(t *testing.T, k k8spsat.Kube, mod func(*k8spsat.Cluster)) *k8spsat.Attestor {
	t.Helper()
	c := k8spsat.Cluster{Name: "prod", Kube: k, ServiceAccounts: []string{"kith:kith-agent"}}
	if mod != nil {
		mod(&c)
	}
	a, err := k8spsat.New(k8spsat.Config{TrustDomain: td, Clusters: []k8spsat.Cluster{c}})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func payload(cluster, token string) []byte {
	b, _ := json.Marshal(k8spsat.Payload{Cluster: cluster, Token: token})
	return b
}

func sels(ss ...string) []attestation.Selector {
	out, err := attestation.ParseSelectors(ss)
	if err != nil {
		panic(err)
	}
	return out
}

func TestAttestAccepts(t *testing.T) {
	wantSels := sels(
		"k8s_psat:cluster:prod", "k8s_psat:agent_ns:kith", "k8s_psat:agent_sa:kith-agent",
		"k8s_psat:agent_pod_name:agent-1", "k8s_psat:agent_pod_uid:"+podUID,
		"k8s_psat:agent_node_name:node-1", "k8s_psat:agent_node_uid:"+nodeUID,
		"k8s_psat:agent_node_label:zone:a", "k8s_psat:agent_node_label:kubernetes.io/os:linux",
		"k8s_psat:agent_pod_label:app:kith-agent",
	)
	tests := []struct {
		name  string
		token string
		mod   func(*k8spsat.Cluster)
		want  []attestation.Selector
	}{
		{name: "a token bound to the agent's pod on its node", token: "good", want: wantSels},
		{name: "a token without node info (older api server): the pod's node is used", token: "old-node-info", want: wantSels},
		{
			name: "label keys limit the label selectors", token: "good",
			mod: func(c *k8spsat.Cluster) { c.NodeLabelKeys = []string{"zone"}; c.PodLabelKeys = []string{"tier"} },
			want: sels(
				"k8s_psat:cluster:prod", "k8s_psat:agent_ns:kith", "k8s_psat:agent_sa:kith-agent",
				"k8s_psat:agent_pod_name:agent-1", "k8s_psat:agent_pod_uid:"+podUID,
				"k8s_psat:agent_node_name:node-1", "k8s_psat:agent_node_uid:"+nodeUID, "k8s_psat:agent_node_label:zone:a",
			),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := newAttestor(t, world(), tt.mod).Attest(context.Background(), payload("prod", tt.token), nil)
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			if want := "spiffe://example.org/kith/agent/k8s_psat/prod/" + nodeUID; res.AgentID.String() != want {
				t.Errorf("agent id %s, want %s", res.AgentID, want)
			}
			if !node.IsAgentID(res.AgentID) {
				t.Errorf("%s is not an agent id", res.AgentID)
			}
			if diff := cmp.Diff(tt.want, res.Selectors); diff != "" {
				t.Errorf("selectors (-want +got):\n%s", diff)
			}
			if res.Commit != nil {
				t.Error("Commit is set: the agent api must upsert the agent record, replacing the node's previous one")
			}
		})
	}
}

func TestAttestRefuses(t *testing.T) {
	tests := []struct {
		name    string
		payload []byte
		reason  string
	}{
		{name: "not json", payload: []byte("eyJhbGciOi"), reason: "malformed payload: want JSON with cluster and token"},
		{name: "no token", payload: payload("prod", ""), reason: "malformed payload: want JSON with cluster and token"},
		{name: "unknown cluster", payload: payload("staging", "good"), reason: "unknown cluster"},
		{name: "a token the api server does not know", payload: payload("prod", "forged"), reason: "token not authenticated by the api server: invalid bearer token"},
		{name: "a token for another audience", payload: payload("prod", "vault"), reason: "token not authenticated by the api server: token audiences are invalid"},
		{name: "a user's token", payload: payload("prod", "user"), reason: "not a service-account token"},
		{name: "a service account outside the allow-list", payload: payload("prod", "other-sa"), reason: "service account not allowed"},
		{name: "a token bound to no pod", payload: payload("prod", "unbound"), reason: "token is not bound to a pod (use a projected service-account token)"},
		{name: "the pod is gone", payload: payload("prod", "gone-pod"), reason: "pod not found"},
		{name: "a pod of the same name replaced the token's", payload: payload("prod", "replaced-pod"), reason: "pod uid differs from the token's (the pod was replaced)"},
		{name: "the pod runs as another service account", payload: payload("prod", "other-pod-sa"), reason: "pod runs as another service account"},
		{name: "the pod is not on a node", payload: payload("prod", "unscheduled"), reason: "pod is not scheduled to a node"},
		{name: "the token names another node", payload: payload("prod", "moved-node"), reason: "pod's node differs from the token's"},
		{name: "the node is gone", payload: payload("prod", "no-node"), reason: "node not found"},
		{name: "a node of the same name replaced the token's", payload: payload("prod", "replaced-node"), reason: "node uid differs from the token's (the node was replaced)"},
	}
	a := newAttestor(t, world(), nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.Attest(context.Background(), tt.payload, nil)
			var r *node.Refusal
			if !errors.As(err, &r) {
				t.Fatalf("Attest = %v, want a refusal", err)
			}
			if r.Reason != tt.reason {
				t.Errorf("reason %q, want %q", r.Reason, tt.reason)
			}
			for _, at := range r.Attrs {
				if strings.Contains(at.Value, "good") || strings.Contains(at.Value, "forged") {
					t.Errorf("refusal attr %s=%q carries the token", at.Key, at.Value)
				}
			}
		})
	}
}

// An API server that cannot be reached is the server's failure, not a refused node: the agent retries.
func TestAttestAPIServerDownIsNotARefusal(t *testing.T) {
	k := world()
	k.err = errors.New("dial tcp 10.0.0.1:443: connection refused")
	_, err := newAttestor(t, k, nil).Attest(context.Background(), payload("prod", "good"), nil)
	var r *node.Refusal
	if err == nil || errors.As(err, &r) {
		t.Fatalf("Attest = %v, want a server error that is not a refusal", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	k := world()
	tests := []struct {
		name     string
		clusters []k8spsat.Cluster
		want     string
	}{
		{name: "no cluster", want: "at least one cluster"},
		{name: "bad name", clusters: []k8spsat.Cluster{{Name: "a/b", Kube: k, ServiceAccounts: []string{"kith:a"}}}, want: `name "a/b"`},
		{name: "twice", clusters: []k8spsat.Cluster{{Name: "a", Kube: k, ServiceAccounts: []string{"kith:a"}}, {Name: "a", Kube: k, ServiceAccounts: []string{"kith:a"}}}, want: "configured twice"},
		{name: "no allow-list", clusters: []k8spsat.Cluster{{Name: "a", Kube: k}}, want: "list the service accounts"},
		{name: "bad service account", clusters: []k8spsat.Cluster{{Name: "a", Kube: k, ServiceAccounts: []string{"kith/agent"}}}, want: "not namespace:name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := k8spsat.New(k8spsat.Config{TrustDomain: td, Clusters: tt.clusters})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestEvidenceReadsTheTokenEachTime(t *testing.T) {
	p := filepath.Join(t.TempDir(), "token")
	e := k8spsat.Evidence{Cluster: "prod", TokenPath: p}
	if _, err := e.Payload(context.Background()); err == nil || !strings.Contains(err.Error(), "token_path") {
		t.Fatalf("Payload without a token file = %v, want an error saying where to put it", err)
	}
	for _, tok := range []string{"first", "rotated"} {
		if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := e.Payload(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(payload("prod", tok)), string(got)); diff != "" {
			t.Errorf("payload (-want +got):\n%s", diff)
		}
	}
	if e.Type() != "k8s_psat" {
		t.Errorf("type %q", e.Type())
	}
}

func typesUID(s string) types.UID { return types.UID(s) }
