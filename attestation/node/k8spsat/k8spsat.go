// Package k8spsat is node attestation by Kubernetes projected service-account token (PSAT): the agent,
// running in a pod of a DaemonSet, sends the token the kubelet projects into that pod for the audience
// "kith", and the name of its cluster. The server, for that cluster:
//
//  1. has the API server review the token (TokenReview) for the cluster's audience: a token that is
//     forged, expired, for another audience, or whose bound pod is gone is refused;
//  2. refuses a service account that is not on the cluster's allow-list;
//  3. reads the pod the token is bound to (a token bound to no pod is refused) and checks its UID, its
//     service account, and that it runs on a node; then reads that node, and checks both against the
//     node the token names, when it names one.
//
// The agent joins as spiffe://<trust domain>/kith/agent/k8s_psat/<cluster>/<node UID>: one agent per
// node, so a re-attestation of the node (a new agent pod, a restart) replaces the previous agent record
// rather than adding one, and a node replaced under the same name (a new UID) is a new agent. Its node
// selectors are k8s_psat:cluster, :agent_ns, :agent_sa, :agent_pod_name, :agent_pod_uid,
// :agent_node_name, :agent_node_uid, :agent_node_label:<key>:<value> and :agent_pod_label:<key>:<value>
// (labels limited to the configured keys, when keys are configured).
package k8spsat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/node"
)

// Type is the attestation type of a projected service-account token.
const Type = attestation.TypeK8sPSAT

// DefaultAudience is the audience the agent's token is projected for, unless configured otherwise.
const DefaultAudience = "kith"

// DefaultTokenPath is where the agent reads its projected token unless configured otherwise (the
// DaemonSet's projected volume mounts it there).
const DefaultTokenPath = "/var/run/secrets/tokens/kith-agent"

// The keys of the user's extra fields in a TokenReview of a token bound to a pod (and, since Kubernetes
// 1.30, naming the pod's node).
const (
	extraPodName  = "authentication.kubernetes.io/pod-name"
	extraPodUID   = "authentication.kubernetes.io/pod-uid"
	extraNodeName = "authentication.kubernetes.io/node-name"
	extraNodeUID  = "authentication.kubernetes.io/node-uid"
)

// saPrefix is the user name prefix of service accounts.
const saPrefix = "system:serviceaccount:"

// ErrNotFound is what a [Kube] returns (wrapped) for a pod or node that does not exist.
var ErrNotFound = errors.New("not found")

// Review is the part of a TokenReview's status the attestor reads.
type Review struct {
	Authenticated bool
	Error         string              // why the token was not authenticated
	Username      string              // system:serviceaccount:<namespace>:<name>
	Extra         map[string][]string // pod and node the token is bound to
	Audiences     []string            // the requested audiences the token is valid for
}

// Kube is what the attestor asks one cluster's API server.
type Kube interface {
	// ReviewToken has the API server authenticate token for audiences (TokenReview).
	ReviewToken(ctx context.Context, token string, audiences []string) (Review, error)
	// GetPod returns a pod, or an error wrapping [ErrNotFound].
	GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error)
	// GetNode returns a node, or an error wrapping [ErrNotFound].
	GetNode(ctx context.Context, name string) (*corev1.Node, error)
}

// Cluster is one Kubernetes cluster whose agents may attest.
type Cluster struct {
	// Name is the cluster's name in agent IDs and the k8s_psat:cluster selector; the agent sends it.
	Name string
	Kube Kube
	// Audience the token must be for. Zero: [DefaultAudience].
	Audience string
	// ServiceAccounts the agent may run as, each "namespace:name"; any other is refused. Required.
	ServiceAccounts []string
	// NodeLabelKeys and PodLabelKeys, when not empty, are the only label keys that become
	// agent_node_label and agent_pod_label selectors. A kubelet may set its own node's labels (all but
	// those under node-restriction.kubernetes.io/), so an entry should trust only keys it cannot.
	NodeLabelKeys []string
	PodLabelKeys  []string
}

// Config builds an [Attestor].
type Config struct {
	TrustDomain spiffeid.TrustDomain // required
	Clusters    []Cluster            // at least one
}

// Attestor is the server half of k8s_psat attestation.
type Attestor struct {
	td       spiffeid.TrustDomain
	clusters map[string]Cluster
}

var _ node.Attestor = (*Attestor)(nil)

// segment is what a cluster name may be: one SPIFFE ID path segment, short and plain.
var segment = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// New validates cfg and returns the attestor.
func New(cfg Config) (*Attestor, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("k8s_psat: trust domain is required")
	}
	if len(cfg.Clusters) == 0 {
		return nil, errors.New("k8s_psat: configure at least one cluster")
	}
	a := &Attestor{td: cfg.TrustDomain, clusters: make(map[string]Cluster, len(cfg.Clusters))}
	for i, c := range cfg.Clusters {
		if !segment.MatchString(c.Name) {
			return nil, fmt.Errorf("k8s_psat: clusters[%d]: name %q is not 1 to 63 letters, digits, '.', '_' or '-'", i, c.Name)
		}
		if _, dup := a.clusters[c.Name]; dup {
			return nil, fmt.Errorf("k8s_psat: cluster %q is configured twice", c.Name)
		}
		if c.Kube == nil {
			return nil, fmt.Errorf("k8s_psat: cluster %s has no API server client", c.Name)
		}
		if len(c.ServiceAccounts) == 0 {
			return nil, fmt.Errorf("k8s_psat: cluster %s: list the service accounts agents run as (e.g. kith:kith-agent); any other is refused", c.Name)
		}
		for _, sa := range c.ServiceAccounts {
			ns, name, ok := strings.Cut(sa, ":")
			if !ok || ns == "" || name == "" || strings.Contains(name, ":") {
				return nil, fmt.Errorf("k8s_psat: cluster %s: service account %q is not namespace:name", c.Name, sa)
			}
		}
		if c.Audience == "" {
			c.Audience = DefaultAudience
		}
		a.clusters[c.Name] = c
	}
	return a, nil
}

// Payload is what the agent sends: its cluster's name and its projected token.
type Payload struct {
	Cluster string `json:"cluster"`
	Token   string `json:"token"`
}

// PayloadName says what the payload is.
func (*Attestor) PayloadName() string {
	return `the cluster name and projected service-account token, as JSON {"cluster": ..., "token": ...}`
}

// Attest verifies the token as the package comment says. Refusals name the reason and what the token
// claimed (cluster, service account, pod, node), never the token. A failure to reach the API server is
// the server's own error, not a refusal.
func (a *Attestor) Attest(ctx context.Context, payload []byte, _ node.Challenge) (node.Result, error) {
	var p Payload
	if err := json.Unmarshal(payload, &p); err != nil || p.Token == "" {
		return node.Result{}, node.Refuse("malformed payload: want JSON with cluster and token")
	}
	cl, ok := a.clusters[p.Cluster]
	if !ok {
		return node.Result{}, node.Refuse("unknown cluster", node.Attr{Key: "cluster", Value: truncate(p.Cluster)})
	}
	attrs := []node.Attr{{Key: "cluster", Value: cl.Name}}
	refuse := func(reason string, more ...node.Attr) (node.Result, error) {
		return node.Result{}, node.Refuse(reason, append(attrs, more...)...)
	}
	rv, err := cl.Kube.ReviewToken(ctx, p.Token, []string{cl.Audience})
	if err != nil {
		return node.Result{}, fmt.Errorf("k8s_psat: cluster %s: review token: %w", cl.Name, err)
	}
	if !rv.Authenticated {
		return refuse("token not authenticated by the api server: " + orUnknown(rv.Error))
	}
	if !slices.Contains(rv.Audiences, cl.Audience) {
		return refuse(fmt.Sprintf("token is not for audience %q", cl.Audience))
	}
	rest, ok := strings.CutPrefix(rv.Username, saPrefix)
	ns, sa, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || ns == "" || sa == "" {
		return refuse("not a service-account token", node.Attr{Key: "user", Value: truncate(rv.Username)})
	}
	attrs = append(attrs, node.Attr{Key: "service_account", Value: ns + ":" + sa})
	if !slices.Contains(cl.ServiceAccounts, ns+":"+sa) {
		return refuse("service account not allowed")
	}
	podName, podUID := first(rv.Extra[extraPodName]), first(rv.Extra[extraPodUID])
	if podName == "" || podUID == "" {
		return refuse("token is not bound to a pod (use a projected service-account token)")
	}
	attrs = append(attrs, node.Attr{Key: "pod", Value: ns + "/" + podName})
	pod, err := cl.Kube.GetPod(ctx, ns, podName)
	switch {
	case errors.Is(err, ErrNotFound):
		return refuse("pod not found")
	case err != nil:
		return node.Result{}, fmt.Errorf("k8s_psat: cluster %s: get pod %s/%s: %w", cl.Name, ns, podName, err)
	case string(pod.UID) != podUID:
		return refuse("pod uid differs from the token's (the pod was replaced)", node.Attr{Key: "pod_uid", Value: podUID})
	case pod.Spec.ServiceAccountName != sa:
		return refuse("pod runs as another service account", node.Attr{Key: "pod_service_account", Value: pod.Spec.ServiceAccountName})
	case pod.Spec.NodeName == "":
		return refuse("pod is not scheduled to a node")
	}
	nodeName := pod.Spec.NodeName
	attrs = append(attrs, node.Attr{Key: "node", Value: nodeName})
	if n := first(rv.Extra[extraNodeName]); n != "" && n != nodeName {
		return refuse("pod's node differs from the token's", node.Attr{Key: "token_node", Value: n})
	}
	nd, err := cl.Kube.GetNode(ctx, nodeName)
	switch {
	case errors.Is(err, ErrNotFound):
		return refuse("node not found")
	case err != nil:
		return node.Result{}, fmt.Errorf("k8s_psat: cluster %s: get node %s: %w", cl.Name, nodeName, err)
	}
	if u := first(rv.Extra[extraNodeUID]); u != "" && u != string(nd.UID) {
		return refuse("node uid differs from the token's (the node was replaced)", node.Attr{Key: "token_node_uid", Value: u})
	}
	if !segment.MatchString(string(nd.UID)) {
		return refuse("node uid is not a plain identifier", node.Attr{Key: "node_uid", Value: truncate(string(nd.UID))})
	}
	id, err := spiffeid.FromSegments(a.td, "kith", "agent", Type, cl.Name, string(nd.UID))
	if err != nil {
		return node.Result{}, fmt.Errorf("k8s_psat: agent id: %w", err)
	}
	return node.Result{
		AgentID:   id,
		Selectors: Selectors(cl, pod, nd),
		Attrs:     append(attrs, node.Attr{Key: "node_uid", Value: string(nd.UID)}),
	}, nil
}

// Selectors are the node selectors of an agent in pod on node nd of cluster cl. Selector values that
// are not valid (empty, too long) are left out.
func Selectors(cl Cluster, pod *corev1.Pod, nd *corev1.Node) []attestation.Selector {
	var sels []attestation.Selector
	add := func(key, value string) {
		s := attestation.Selector{Type: Type, Key: key, Value: value}
		if s.Validate() == nil {
			sels = append(sels, s)
		}
	}
	add("cluster", cl.Name)
	add("agent_ns", pod.Namespace)
	add("agent_sa", pod.Spec.ServiceAccountName)
	add("agent_pod_name", pod.Name)
	add("agent_pod_uid", string(pod.UID))
	add("agent_node_name", nd.Name)
	add("agent_node_uid", string(nd.UID))
	for k, v := range nd.Labels {
		if len(cl.NodeLabelKeys) == 0 || slices.Contains(cl.NodeLabelKeys, k) {
			add("agent_node_label", k+":"+v)
		}
	}
	for k, v := range pod.Labels {
		if len(cl.PodLabelKeys) == 0 || slices.Contains(cl.PodLabelKeys, k) {
			add("agent_pod_label", k+":"+v)
		}
	}
	return attestation.Normalize(sels)
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func orUnknown(s string) string {
	if s == "" {
		return "no reason given"
	}
	return s
}

// truncate bounds a value the agent chose before it is logged.
func truncate(s string) string {
	if len(s) > 128 {
		return s[:128] + "…"
	}
	return s
}

// Evidence is the agent half: the cluster's name and the token read from TokenPath on each attestation
// (the kubelet rotates it).
type Evidence struct {
	Cluster   string
	TokenPath string // zero: DefaultTokenPath
}

var _ node.Evidence = Evidence{}

// Type is [Type].
func (Evidence) Type() string { return Type }

// Payload reads the token and returns the JSON [Payload].
func (e Evidence) Payload(context.Context) ([]byte, error) {
	path := e.TokenPath
	if path == "" {
		path = DefaultTokenPath
	}
	tok, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("k8s_psat: read the projected service-account token: %w (mount one with audience %q there, or set k8s_psat.token_path)", err, DefaultAudience)
	}
	t := strings.TrimSpace(string(tok))
	if t == "" {
		return nil, fmt.Errorf("k8s_psat: the token file %s is empty", path)
	}
	if e.Cluster == "" {
		return nil, errors.New("k8s_psat: the agent's cluster name is not set (k8s_psat.cluster): it must be one the server lists")
	}
	return json.Marshal(Payload{Cluster: e.Cluster, Token: t})
}
