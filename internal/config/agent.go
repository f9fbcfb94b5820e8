package config

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/attestation/workload"
	_ "github.com/kithid/kith/attestation/workload/k8s" // registers the k8s attestor
	"github.com/kithid/kith/attestation/workload/unix"  // registers the unix attestor, the default
)

// Reconnect backoff bounds: an agent that lost the server retries at most DefaultRetryMax apart (jitter
// included) unless retry_max says otherwise, and never more than MaxRetryMax apart.
const (
	DefaultRetryMax = 5 * time.Second
	MaxRetryMax     = time.Minute
)

// Agent is the `kith agent` configuration. Every field is optional unless noted; the comment gives the
// default and the environment variable that overrides it.
type Agent struct {
	// Server is the server's agent API address host:port, or several separated by commas (servers on one
	// PostgreSQL store; a name may also resolve to several addresses): the agent talks to one and fails
	// over to the next. Default localhost:8081. Env KITH_AGENT_SERVER.
	Server string `yaml:"server"`
	// TrustDomain the agent belongs to. Default: that of the agent SVID saved in data_dir; on first start,
	// the one the bootstrap bundle's roots name (their spiffe:// URI SAN, as Kith's own CA roots carry),
	// else example.org. When set, a saved SVID or a bundle of another trust domain is refused.
	// Env KITH_AGENT_TRUST_DOMAIN.
	TrustDomain string `yaml:"trust_domain"`
	// NodeAttestor is how the agent proves its node: join_token or k8s_psat. Default join_token.
	// Env KITH_AGENT_NODE_ATTESTOR.
	NodeAttestor string `yaml:"node_attestor"`
	// K8sPSAT configures node_attestor k8s_psat.
	K8sPSAT AgentK8sPSAT `yaml:"k8s_psat"`
	// K8s configures the k8s workload attestor (when workload_attestors lists it).
	K8s AgentK8s `yaml:"k8s"`
	// JoinToken attests the node on first start (not needed once the agent holds an SVID). Env KITH_AGENT_JOIN_TOKEN.
	JoinToken string `yaml:"join_token"`
	// TrustBundle is a PEM file with the server's root CAs, used to authenticate the server on first start.
	// Env KITH_AGENT_TRUST_BUNDLE.
	TrustBundle string `yaml:"trust_bundle"`
	// TrustBundleURL fetches the SPIFFE bundle from the server's HTTP port (/v1/bundle); requires
	// InsecureBootstrap unless it is https. Env KITH_AGENT_TRUST_BUNDLE_URL.
	TrustBundleURL string `yaml:"trust_bundle_url"`
	// InsecureBootstrap trusts whatever TrustBundleURL returns (logged as a warning). Env KITH_AGENT_INSECURE_BOOTSTRAP.
	InsecureBootstrap bool `yaml:"insecure_bootstrap"`
	// DataDir keeps the agent's SVID, keys, bundle and entries (0700). Default /var/lib/kith-agent. Env KITH_AGENT_DATA_DIR.
	DataDir string `yaml:"data_dir"`
	// Socket is the Workload API and SDS socket (mode 0777 in a 0755 dir). Default /run/kith/agent.sock.
	// Env KITH_AGENT_SOCKET.
	Socket string `yaml:"socket"`
	// SDSSocket optionally serves SDS on its own socket too. Default none. Env KITH_AGENT_SDS_SOCKET.
	SDSSocket string `yaml:"sds_socket"`
	// AuthzSocket serves Envoy ext_authz. Default <dir of socket>/authz.sock. Env KITH_AGENT_AUTHZ_SOCKET.
	AuthzSocket string `yaml:"authz_socket"`
	// AuthzListen serves Envoy ext_authz over TCP. Default 127.0.0.1:9191; "off" disables. Env KITH_AGENT_AUTHZ_LISTEN.
	AuthzListen string `yaml:"authz_listen"`
	// RotateAtPercent of an SVID's life after which it is renewed (± 10 % jitter). Default 50.
	// Env KITH_AGENT_ROTATE_AT_PERCENT.
	RotateAtPercent int64 `yaml:"rotate_at_percent"`
	// RetryMax is the longest wait between reconnect attempts, jitter included: after a server outage a
	// grant or revoke reaches the agent at most this long after the server is back. Default 5s, at most
	// 1m. Env KITH_AGENT_RETRY_MAX.
	RetryMax Duration `yaml:"retry_max"`
	// MetricsListen serves /metrics and /healthz over HTTP (e.g. 127.0.0.1:9090). Default off.
	// Env KITH_AGENT_METRICS_LISTEN.
	MetricsListen string `yaml:"metrics_listen"`
	// ProfilingEnabled adds Go's profiles (/debug/pprof/) to the metrics listener, for finding where
	// CPU and memory go. Default false. Env KITH_AGENT_PROFILING_ENABLED.
	ProfilingEnabled bool `yaml:"profiling_enabled"`
	// WorkloadAttestors lists the workload attestors the agent runs for every caller of its sockets, by
	// name; their selectors are merged. Default [unix]. Env KITH_AGENT_WORKLOAD_ATTESTORS (comma-separated).
	WorkloadAttestors []string `yaml:"workload_attestors"`
	// AuthzDecision names an OPA-Envoy-style decision in the custom policy to use instead of Kith's built-in
	// one (must match the server's authz.decision). Env KITH_AGENT_AUTHZ_DECISION.
	AuthzDecision string `yaml:"authz_decision"`
	// AuthzDeadline bounds each ext_authz check (waiting for an evaluation slot and evaluating); a check
	// that misses it is denied with the reason. Keep it well under Envoy's ext_authz timeout (200 ms by
	// default). Default 50ms. Env KITH_AGENT_AUTHZ_DEADLINE.
	AuthzDeadline Duration `yaml:"authz_deadline"`
	// AuthzMaxEvaluations bounds the policy evaluations in flight. Default 0: 4 × the CPUs Go uses, at
	// least 8. Env KITH_AGENT_AUTHZ_MAX_EVALUATIONS.
	AuthzMaxEvaluations int `yaml:"authz_max_evaluations"`
	// AuthzMaxPerCaller bounds the evaluations in flight for one caller SPIFFE ID, so that one caller's
	// costly requests cannot starve the others. Default 0: half the CPUs Go uses, at least 1.
	// Env KITH_AGENT_AUTHZ_MAX_PER_CALLER.
	AuthzMaxPerCaller int `yaml:"authz_max_per_caller"`
	// ActivityReportEvery is how often, at most, the agent reports the SVIDs it holds and its ext_authz
	// decision counts per caller to the server (the console's identity page, `kith activity`), when they
	// changed. Default 5s, 1s to 10m. Env KITH_AGENT_ACTIVITY_REPORT_EVERY.
	ActivityReportEvery Duration `yaml:"activity_report_every"`
	Log                 Log      `yaml:"log"`
}

// AgentK8sPSAT configures Kubernetes projected service-account token node attestation.
type AgentK8sPSAT struct {
	// Cluster is this cluster's name, as the server's node_attestors.k8s_psat.clusters names it. Required
	// with node_attestor k8s_psat. Env KITH_AGENT_K8S_PSAT_CLUSTER.
	Cluster string `yaml:"cluster"`
	// TokenPath is the projected service-account token (audience kith). Default
	// /var/run/secrets/tokens/kith-agent. Env KITH_AGENT_K8S_PSAT_TOKEN_PATH.
	TokenPath string `yaml:"token_path"`
}

// AgentK8s configures the k8s workload attestor (docs/attestors/k8s.md).
type AgentK8s struct {
	// KubeletURL is the kubelet's secure port. Default https://127.0.0.1:10250. Env KITH_AGENT_K8S_KUBELET_URL.
	KubeletURL string `yaml:"kubelet_url"`
	// TokenPath is the service-account token sent to the kubelet. Default
	// /var/run/secrets/kubernetes.io/serviceaccount/token. Env KITH_AGENT_K8S_TOKEN_PATH.
	TokenPath string `yaml:"token_path"`
	// KubeletCA is a PEM file the kubelet's certificate is verified against. Default
	// /var/run/secrets/kubernetes.io/serviceaccount/ca.crt. Env KITH_AGENT_K8S_KUBELET_CA.
	KubeletCA string `yaml:"kubelet_ca"`
	// SkipKubeletVerification does not verify the kubelet's certificate. Default false.
	// Env KITH_AGENT_K8S_SKIP_KUBELET_VERIFICATION.
	SkipKubeletVerification bool `yaml:"skip_kubelet_verification"`
	// PollInterval is the wait between asking the kubelet again for a pod or container it does not list
	// yet. Default 250ms. Env KITH_AGENT_K8S_POLL_INTERVAL.
	PollInterval Duration `yaml:"poll_interval"`
	// MaxWait bounds that waiting. Default 10s. Env KITH_AGENT_K8S_MAX_WAIT.
	MaxWait Duration `yaml:"max_wait"`
	// CacheTTL is how long the kubelet's pod list is reused. Default 5s. Env KITH_AGENT_K8S_CACHE_TTL.
	CacheTTL Duration `yaml:"cache_ttl"`
}

// LoadAgent reads the agent config from path (may be empty) and applies KITH_AGENT_* environment
// overrides (and KITH_LOG_* for log).
func LoadAgent(path string, env func(string) (string, bool)) (*Agent, error) {
	var c Agent
	if err := load(path, &c, "KITH_AGENT_", env); err != nil {
		return nil, err
	}
	return &c, nil
}

// Finish fills defaults and validates.
func (c *Agent) Finish() error {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.Server, "localhost:8081")
	def(&c.NodeAttestor, "join_token")
	def(&c.DataDir, "/var/lib/kith-agent")
	def(&c.Socket, "/run/kith/agent.sock")
	def(&c.AuthzSocket, filepath.Join(filepath.Dir(c.Socket), "authz.sock"))
	def(&c.AuthzListen, "127.0.0.1:9191")
	def(&c.Log.Level, "info")
	def(&c.Log.Format, "text")
	if c.RotateAtPercent == 0 {
		c.RotateAtPercent = 50
	}
	if len(c.WorkloadAttestors) == 0 {
		c.WorkloadAttestors = []string{unix.Name}
	}
	if c.AuthzDeadline == 0 {
		c.AuthzDeadline = Duration(50 * time.Millisecond)
	}
	if d := c.AuthzDeadline.D(); d < time.Millisecond || d > 10*time.Second {
		return &FieldError{"authz_deadline", fmt.Sprintf("%s is outside 1ms to 10s: keep it under Envoy's ext_authz timeout", d)}
	}
	if c.AuthzMaxEvaluations < 0 || c.AuthzMaxPerCaller < 0 || c.AuthzMaxEvaluations > 0 && c.AuthzMaxPerCaller > c.AuthzMaxEvaluations {
		return &FieldError{"authz_max_per_caller", fmt.Sprintf("authz_max_evaluations %d and authz_max_per_caller %d: neither may be negative, and the per-caller bound may not exceed the total", c.AuthzMaxEvaluations, c.AuthzMaxPerCaller)}
	}
	if c.RetryMax == 0 {
		c.RetryMax = Duration(DefaultRetryMax)
	}
	if c.ActivityReportEvery == 0 {
		c.ActivityReportEvery = Duration(5 * time.Second)
	}
	if d := c.ActivityReportEvery.D(); d < time.Second || d > 10*time.Minute {
		return &FieldError{"activity_report_every", fmt.Sprintf("%s is outside 1s to 10m", d)}
	}
	if c.RetryMax.D() < 100*time.Millisecond || c.RetryMax.D() > MaxRetryMax {
		return &FieldError{"retry_max", fmt.Sprintf("%s is outside 100ms to %s: a revoke reaches an agent that lost the server only when it reconnects", c.RetryMax.D(), MaxRetryMax)}
	}
	for _, a := range strings.Split(c.Server, ",") {
		if _, _, err := net.SplitHostPort(strings.TrimSpace(a)); err != nil {
			return &FieldError{"server", fmt.Sprintf("%q is not host:port (e.g. kith-server:8081), or several separated by commas (a:8081,b:8081)", a)}
		}
	}
	if _, err := spiffeid.TrustDomainFromString(c.TrustDomain); c.TrustDomain != "" && err != nil {
		return &FieldError{"trust_domain", fmt.Sprintf("%q is not a valid trust domain: %v", c.TrustDomain, err)}
	}
	for _, p := range []struct{ field, v *string }{{ptr("data_dir"), &c.DataDir}, {ptr("socket"), &c.Socket}, {ptr("authz_socket"), &c.AuthzSocket}} {
		abs, err := filepath.Abs(*p.v)
		if err != nil {
			return &FieldError{*p.field, err.Error()}
		}
		*p.v = abs
	}
	if len(c.Socket) > 100 {
		return &FieldError{"socket", fmt.Sprintf("path %q is too long for a unix socket (at most 100 bytes)", c.Socket)}
	}
	if c.AuthzListen != "off" {
		if _, _, err := net.SplitHostPort(c.AuthzListen); err != nil {
			return &FieldError{"authz_listen", fmt.Sprintf("%q is not host:port or off", c.AuthzListen)}
		}
	}
	if c.TrustBundleURL != "" && c.TrustBundle != "" {
		return &FieldError{"trust_bundle_url", "give trust_bundle or trust_bundle_url, not both"}
	}
	if c.RotateAtPercent < 10 || c.RotateAtPercent > 90 {
		return &FieldError{"rotate_at_percent", fmt.Sprintf("%d is outside 10 to 90", c.RotateAtPercent)}
	}
	if err := workload.Check(c.WorkloadAttestors); err != nil {
		var u *workload.UnknownError
		if errors.As(err, &u) {
			return &FieldError{"workload_attestors", fmt.Sprintf("%q is not a workload attestor: use one of %s", u.Name, strings.Join(u.Known, ", "))}
		}
		return &FieldError{"workload_attestors", err.Error()}
	}
	for i, n := range c.WorkloadAttestors {
		if slices.Contains(c.WorkloadAttestors[:i], n) {
			return &FieldError{"workload_attestors", fmt.Sprintf("%q is listed twice", n)}
		}
	}
	if err := oneOf("node_attestor", c.NodeAttestor, "join_token", "k8s_psat"); err != nil {
		return err
	}
	if c.NodeAttestor == "k8s_psat" && c.K8sPSAT.Cluster == "" {
		return &FieldError{"k8s_psat.cluster", "is required with node_attestor k8s_psat: the cluster's name as the server lists it"}
	}
	if c.NodeAttestor == "k8s_psat" && c.JoinToken != "" {
		return &FieldError{"join_token", "is set but node_attestor is k8s_psat: remove one"}
	}
	for _, d := range []struct {
		field string
		v     Duration
	}{{"k8s.poll_interval", c.K8s.PollInterval}, {"k8s.max_wait", c.K8s.MaxWait}, {"k8s.cache_ttl", c.K8s.CacheTTL}} {
		if d.v < 0 {
			return &FieldError{d.field, "must not be negative"}
		}
	}
	if err := oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error"); err != nil {
		return err
	}
	return oneOf("log.format", c.Log.Format, "text", "json")
}

func ptr(s string) *string { return &s }
