package config

import (
	"fmt"
	"math"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/keymanager"
)

// DefaultTrustDomain is the server's trust domain unless configured, and the agent's when neither its
// configuration nor its bootstrap bundle names one.
const DefaultTrustDomain = "example.org"

// Server is the `kith server` configuration. Every field is optional; the comment gives the default and
// the environment variable that overrides it.
type Server struct {
	// TrustDomain of every identity this server issues. Default example.org. Env KITH_TRUST_DOMAIN.
	TrustDomain string `yaml:"trust_domain"`
	// DataDir holds the store, CA keys and the admin socket. Default /var/lib/kith. Env KITH_DATA_DIR.
	DataDir string `yaml:"data_dir"`
	// ServerName is this server's name among the servers that share a store (store.driver postgres): the
	// owner of its own intermediate CA and the OU of that intermediate's subject (docs/ha.md). Keep it
	// stable across restarts: a new name is a new server, with a new intermediate. Default: with
	// store.driver postgres, a name made on the first start (the host name and 6 random hex digits) and kept
	// in <data_dir>/server-name; unused with sqlite. Env KITH_SERVER_NAME.
	ServerName string `yaml:"server_name"`
	Log        Log    `yaml:"log"`
	Listen     Listen `yaml:"listen"`
	Admin      Admin  `yaml:"admin"`
	CA         CA     `yaml:"ca"`
	SVID       SVID   `yaml:"svid"`
	Store      Store  `yaml:"store"`
	Token      Token  `yaml:"join_token"`
	Policy     Policy `yaml:"policy"`
	Authz      Authz  `yaml:"authz"`
	// Users configures people's logins (docs/users.md).
	Users Users `yaml:"users"`
	UI    UI    `yaml:"ui"`
	// NodeAttestors configures node attestation besides join tokens (always on).
	NodeAttestors NodeAttestors `yaml:"node_attestors"`
	// Federation configures the bundle endpoint other trust domains fetch this one's bundle from
	// (docs/federation.md). Relationships with other trust domains are kept in the store (kith federation).
	Federation Federation `yaml:"federation"`
}

// Federation configures federation with other trust domains.
type Federation struct {
	BundleEndpoint BundleEndpoint `yaml:"bundle_endpoint"`
}

// BundleEndpoint serves this trust domain's bundle by the SPIFFE Trust Domain and Bundle specification.
type BundleEndpoint struct {
	// Address to listen on (e.g. :8443). Default none: no bundle endpoint. Env
	// KITH_FEDERATION_BUNDLE_ENDPOINT_ADDRESS.
	Address string `yaml:"address"`
	// Profile: https_spiffe (served with the server's own SVID, spiffe://TD/kith/server) or https_web
	// (served with CertFile and KeyFile, a Web PKI certificate). Default https_spiffe.
	Profile string `yaml:"profile"`
	// CertFile and KeyFile (PEM) for https_web; reread when they change. Required with https_web.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// RefreshHint is the spiffe_refresh_hint of the served bundle: how often federated servers fetch it.
	// Default the CA's (ca.intermediate_ttl / 10, between 1m and 1h). Env
	// KITH_FEDERATION_BUNDLE_ENDPOINT_REFRESH_HINT.
	RefreshHint Duration `yaml:"refresh_hint"`
}

// NodeAttestors configures the node attestation methods agents may use besides join tokens.
type NodeAttestors struct {
	K8sPSAT K8sPSAT `yaml:"k8s_psat"`
}

// K8sPSAT configures Kubernetes projected service-account token attestation (docs/attestors/k8s_psat.md).
type K8sPSAT struct {
	// Clusters whose agents may attest with their projected service-account token. Default none:
	// k8s_psat is off. Not settable from the environment.
	Clusters []K8sCluster `yaml:"clusters"`
}

// K8sCluster is one cluster for k8s_psat.
type K8sCluster struct {
	// Name of the cluster in agent IDs and the k8s_psat:cluster selector; the agents send it. Required.
	Name string `yaml:"name"`
	// Kubeconfig file to reach the cluster's API server. Default none: in-cluster (the server runs in it).
	Kubeconfig string `yaml:"kubeconfig"`
	// Audience the agents' tokens are projected for. Default kith.
	Audience string `yaml:"audience"`
	// ServiceAccounts agents run as, "namespace:name"; any other is refused. Required.
	ServiceAccounts []string `yaml:"service_accounts"`
	// NodeLabelKeys limits the agent_node_label selectors to these keys. Default: every label.
	NodeLabelKeys []string `yaml:"node_label_keys"`
	// PodLabelKeys limits the agent_pod_label selectors to these keys. Default: every label.
	PodLabelKeys []string `yaml:"pod_label_keys"`
	// Controllers watches this cluster's KithIdentity and KithGrant resources: every pod a KithIdentity
	// selects gets an entry on its node's agent, and every KithGrant becomes a grant (docs/kubernetes.md).
	// At most one cluster. Default false.
	Controllers bool `yaml:"controllers"`
	// ServiceAccountTemplate turns a {namespace, serviceAccount} shorthand of a KithGrant into a SPIFFE ID: a
	// Go template over .TrustDomain, .Namespace and .ServiceAccount that must give an ID in the trust domain.
	// Set it to the spiffeIDTemplate of the cluster's KithIdentity resources when they name another scheme.
	// Default spiffe://{{.TrustDomain}}/ns/{{.Namespace}}/sa/{{.ServiceAccount}}.
	ServiceAccountTemplate string `yaml:"service_account_template"`
}

// Policy configures custom Rego policy.
type Policy struct {
	// Dir holds custom Rego modules (package kith.ext, or an OPA-Envoy policy with authz.decision); *_test.rego
	// files are run as tests before the policy is used. Default none. Env KITH_POLICY_DIR.
	Dir string `yaml:"dir"`
	// Git follows a policy repository instead of Dir.
	Git PolicyGit `yaml:"git"`
}

// PolicyGit configures the policy repository the server follows (see docs/policy-git.md).
type PolicyGit struct {
	// URL is https://, ssh://, file:// or a local path. Default none (no Git sync). Env KITH_POLICY_GIT_URL.
	URL string `yaml:"url"`
	// Ref is a branch, tag or commit SHA. Default: the remote's HEAD. Env KITH_POLICY_GIT_REF.
	Ref string `yaml:"ref"`
	// Path is the sub-directory holding the policy. Default the repository root. Env KITH_POLICY_GIT_PATH.
	Path string `yaml:"path"`
	// PollInterval is how often the remote is checked. Default 30s. Env KITH_POLICY_GIT_POLL_INTERVAL.
	PollInterval Duration `yaml:"poll_interval"`
	// Timeout bounds one sync (refs, fetch, tests, apply): a remote that accepts and never answers fails the
	// sync at this point and the next poll tries again. Default 1m. Env KITH_POLICY_GIT_TIMEOUT.
	Timeout Duration `yaml:"timeout"`
	// Token authenticates https fetches. Default none. Env KITH_POLICY_GIT_TOKEN.
	Token string `yaml:"token"`
	// SSHKeyFile is a private key file for ssh:// remotes. Default none. Env KITH_POLICY_GIT_SSH_KEY_FILE.
	SSHKeyFile string `yaml:"ssh_key_file"`
	// WebhookSecret authenticates POST /v1/policy/webhook (GitHub HMAC or GitLab token). Default none: the
	// webhook is off. Env KITH_POLICY_GIT_WEBHOOK_SECRET.
	WebhookSecret string `yaml:"webhook_secret"`
	// MaxFileBytes bounds one .rego file under Path. Default 1048576 (1 MiB). Env KITH_POLICY_GIT_MAX_FILE_BYTES.
	MaxFileBytes int64 `yaml:"max_file_bytes"`
	// MaxDataBytes bounds the data file (data.json / data.yaml). Default 16777216 (16 MiB, ≈ 100,000
	// grants). Env KITH_POLICY_GIT_MAX_DATA_BYTES.
	MaxDataBytes int64 `yaml:"max_data_bytes"`
	// MaxFiles bounds the policy files (.rego and the data file) under Path. Default 1000.
	// Env KITH_POLICY_GIT_MAX_FILES.
	MaxFiles int64 `yaml:"max_files"`
	// MaxTotalBytes bounds the policy files under Path together. Default 33554432 (32 MiB).
	// Env KITH_POLICY_GIT_MAX_TOTAL_BYTES.
	MaxTotalBytes int64 `yaml:"max_total_bytes"`
	// MaxFetchBytes bounds one fetch (the commit's whole tree: go-git cannot fetch the path alone).
	// Default 268435456 (256 MiB). Env KITH_POLICY_GIT_MAX_FETCH_BYTES.
	MaxFetchBytes int64 `yaml:"max_fetch_bytes"`
}

// Authz configures the decision.
type Authz struct {
	// Decision names an OPA-Envoy-style decision (e.g. envoy/authz/allow) in the custom policy to use instead
	// of Kith's built-in one. Default: the built-in decision. Env KITH_AUTHZ_DECISION.
	Decision string `yaml:"decision"`
}

// UI configures the web console served under /ui/ on the HTTP listener (docs/console.md).
type UI struct {
	// Enabled: auto serves the console only when listen.http is a loopback address (127.0.0.1, ::1,
	// localhost), true serves it on any address, false never. The console is read-only and, like the rest of
	// the HTTP listener, unauthenticated (docs/security.md). Default auto. Env KITH_UI_ENABLED.
	Enabled string `yaml:"enabled"`
}

// UIOn reports whether the console is served: ui.enabled true, or auto with a loopback listen.http.
func (c *Server) UIOn() bool {
	switch c.UI.Enabled {
	case "true":
		return true
	case "false":
		return false
	}
	host, _, err := net.SplitHostPort(c.Listen.HTTP)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Log configures logging.
type Log struct {
	// Level: debug, info, warn, error. Default info. Env KITH_LOG_LEVEL.
	Level string `yaml:"level"`
	// Format: text or json. Default text. Env KITH_LOG_FORMAT.
	Format string `yaml:"format"`
}

// Listen configures the server's endpoints.
type Listen struct {
	// GRPC is the agent API address (mTLS). Default :8081. Env KITH_LISTEN_GRPC.
	GRPC string `yaml:"grpc"`
	// HTTP serves /healthz, /readyz, /metrics, /.well-known/jwks.json. Default :8080. Env KITH_LISTEN_HTTP.
	HTTP string `yaml:"http"`
	// AdminSocket is the admin API unix socket (mode 0600). Default <data_dir>/admin.sock. Env KITH_LISTEN_ADMIN_SOCKET.
	AdminSocket string `yaml:"admin_socket"`
	// AdvertiseHTTP is the public base URL of the HTTP port used as the OIDC issuer.
	// Default http://<listen.http with localhost for an empty host>. Env KITH_LISTEN_ADVERTISE_HTTP.
	AdvertiseHTTP string `yaml:"advertise_http"`
	// OIDCDiscovery is an extra address that serves only /.well-known/openid-configuration and the JWKS
	// (/.well-known/jwks.json, /keys), for exposing them publicly without the rest of the HTTP API.
	// Default none. Env KITH_LISTEN_OIDC_DISCOVERY.
	OIDCDiscovery string `yaml:"oidc_discovery"`
}

// Admin configures who may use the admin socket. Every connection's peer credentials (SO_PEERCRED) are
// checked against these lists, whatever the socket file's mode; other callers are disconnected at once.
type Admin struct {
	// AllowedUIDs may connect. Default: the uid the server runs as, and root (0). Env KITH_ADMIN_ALLOWED_UIDS
	// (comma-separated).
	AllowedUIDs []int `yaml:"allowed_uids"`
	// AllowedGIDs may connect too (a caller's primary gid). Default none. Env KITH_ADMIN_ALLOWED_GIDS.
	AllowedGIDs []int `yaml:"allowed_gids"`
	// Listen serves the admin API over mTLS on this TCP address too, for users who logged in (kith login):
	// every call is then authorized by the kith.admin policy. Default none: off. Env KITH_ADMIN_LISTEN.
	Listen string `yaml:"listen"`
	// URL is where users reach Listen (printed by kith user add). Default https://<listen, with localhost
	// for an empty host>. Env KITH_ADMIN_URL.
	URL string `yaml:"url"`
}

// Users configures the logins of people (spiffe://TD/user/<name>).
type Users struct {
	// SVIDTTL is the lifetime of a user's X.509-SVID, renewed on use while the login lasts. Default 8h.
	// Env KITH_USERS_SVID_TTL.
	SVIDTTL Duration `yaml:"svid_ttl"`
	// LoginTTL is how long one login may renew its SVID; then the user logs in again. Default 7d.
	// Env KITH_USERS_LOGIN_TTL.
	LoginTTL Duration `yaml:"login_ttl"`
	// CodeTTL is how long an enrolment code from kith user add may be used. Default 24h. Env KITH_USERS_CODE_TTL.
	CodeTTL Duration `yaml:"code_ttl"`
	OIDC    OIDC     `yaml:"oidc"`
}

// OIDC configures login with an OpenID Connect provider (device authorization grant, and authorization code
// with PKCE and a loopback redirect).
type OIDC struct {
	// Issuer is the provider's issuer URL. Default none: OpenID Connect login is off. Env KITH_USERS_OIDC_ISSUER.
	Issuer string `yaml:"issuer"`
	// ClientID is the public (native) client for authorization code + PKCE; its redirect URI is
	// http://127.0.0.1/callback on any port. Env KITH_USERS_OIDC_CLIENT_ID.
	ClientID string `yaml:"client_id"`
	// DeviceClientID is the client for the device authorization grant. Default ClientID.
	// Env KITH_USERS_OIDC_DEVICE_CLIENT_ID.
	DeviceClientID string `yaml:"device_client_id"`
	// DeviceClientSecret, for providers whose device client authenticates; it is handed to every CLI, so it
	// is no secret. Default none. Env KITH_USERS_OIDC_DEVICE_CLIENT_SECRET.
	DeviceClientSecret string `yaml:"device_client_secret"`
	// Scopes asked for. Default [openid, profile, email]. Env KITH_USERS_OIDC_SCOPES.
	Scopes []string `yaml:"scopes"`
	// UsernameClaim names the user: preferred_username, or email (its part before the @, lowercased).
	// Default preferred_username. Env KITH_USERS_OIDC_USERNAME_CLAIM.
	UsernameClaim string `yaml:"username_claim"`
	// EmailLabel, when set, is the label key the email claim is copied to (e.g. email). Default none.
	// Env KITH_USERS_OIDC_EMAIL_LABEL.
	EmailLabel string `yaml:"email_label"`
	// GroupsClaim names the claim listing the user's groups. Default groups. Env KITH_USERS_OIDC_GROUPS_CLAIM.
	GroupsClaim string `yaml:"groups_claim"`
	// GroupLabels maps a group to a label "key=value" its members get (payments-team: team=payments).
	// Default none. Not settable from the environment.
	GroupLabels map[string]string `yaml:"group_labels"`
	// GroupRoles maps a group to a role its members get (kith-admins: admin). Default none. Not settable
	// from the environment.
	GroupRoles map[string]string `yaml:"group_roles"`
}

// CA configures the certificate authority.
type CA struct {
	// KeyManager: disk (PEM files, 0600, in <data_dir>/keys), memory, or database (with store.driver
	// postgres: keys sealed under KEKFile in the database every server shares, see docs/ha.md). Default
	// disk, database with store.driver postgres. Env KITH_CA_KEY_MANAGER.
	KeyManager string `yaml:"key_manager"`
	// KEKFile is the key-encryption key of the database key manager: a file (mode 0600) holding at least
	// 32 random bytes, the same on every server. Required with key_manager database. Env KITH_CA_KEK_FILE.
	KEKFile string `yaml:"kek_file"`
	// RootTTL is the root CA lifetime. Default 365d. Env KITH_CA_ROOT_TTL.
	RootTTL Duration `yaml:"root_ttl"`
	// IntermediateTTL is the signing CA (and JWT key) lifetime. Default 7d. Env KITH_CA_INTERMEDIATE_TTL.
	IntermediateTTL Duration `yaml:"intermediate_ttl"`
	// RootOverlap is how long a new root is published before it signs. Default 2 × svid.max_x509_ttl.
	// Env KITH_CA_ROOT_OVERLAP.
	RootOverlap Duration `yaml:"root_overlap"`
	// Organization in CA subjects. Default Kith. Env KITH_CA_ORGANIZATION.
	Organization string `yaml:"organization"`
	// JWTIssuer is the iss claim of JWT-SVIDs and the issuer named by /.well-known/openid-configuration:
	// set it to the public URL of the HTTP port when OIDC relying parties (cloud IAM federation) accept
	// Kith's JWT-SVIDs. Default listen.advertise_http: JWT-SVIDs always carry iss. Env KITH_CA_JWT_ISSUER.
	JWTIssuer string `yaml:"jwt_issuer"`
	// Upstream, when one of its kinds is set, signs the CA's intermediates and supplies the trust bundle's
	// roots instead of the CA's own self-signed root (docs/ca.md, "Upstream authorities").
	Upstream Upstream `yaml:"upstream"`
}

// Upstream chooses the upstream authority: at most one of Disk, Step, Vault.
type Upstream struct {
	// RetryMax caps the wait between retries after a failed upstream call (1 s, doubling). Default 30s.
	// Env KITH_CA_UPSTREAM_RETRY_MAX.
	RetryMax Duration `yaml:"retry_max"`
	// Disk is a CA certificate and key in files.
	Disk UpstreamDisk `yaml:"disk"`
	// Step is a step-ca.
	Step UpstreamStep `yaml:"step"`
	// Vault is a Vault (or OpenBao) PKI secrets engine.
	Vault UpstreamVault `yaml:"vault"`
}

// UpstreamVault is a Vault PKI mount; set when Address is.
type UpstreamVault struct {
	// Address of Vault. Env KITH_CA_UPSTREAM_VAULT_ADDRESS.
	Address string `yaml:"address"`
	// Mount is the PKI mount. Default pki. Env KITH_CA_UPSTREAM_VAULT_MOUNT.
	Mount string `yaml:"mount"`
	// Issuer is the issuer that signs (name or ID): <mount>/issuer/<issuer>/sign-intermediate. Default the
	// mount's default issuer (<mount>/root/sign-intermediate). Env KITH_CA_UPSTREAM_VAULT_ISSUER.
	Issuer string `yaml:"issuer"`
	// Namespace (Vault Enterprise, OpenBao). Default none. Env KITH_CA_UPSTREAM_VAULT_NAMESPACE.
	Namespace string `yaml:"namespace"`
	// CACertFile is the CA of Vault's TLS certificate (PEM). Default the system roots.
	// Env KITH_CA_UPSTREAM_VAULT_CA_CERT_FILE.
	CACertFile string `yaml:"ca_cert_file"`
	// TLSServerName is the name Vault's TLS certificate must have. Default the address's host.
	// Env KITH_CA_UPSTREAM_VAULT_TLS_SERVER_NAME.
	TLSServerName string `yaml:"tls_server_name"`
	// TokenFile holds a Vault token (mode 0600), re-read when it changes. Env KITH_CA_UPSTREAM_VAULT_TOKEN_FILE.
	TokenFile string `yaml:"token_file"`
	// AppRoleMount is the AppRole auth mount. Default approle. Env KITH_CA_UPSTREAM_VAULT_APPROLE_MOUNT.
	AppRoleMount string `yaml:"approle_mount"`
	// AppRoleRoleID is the AppRole role ID. Env KITH_CA_UPSTREAM_VAULT_APPROLE_ROLE_ID.
	AppRoleRoleID string `yaml:"approle_role_id"`
	// AppRoleSecretIDFile holds the AppRole secret ID (mode 0600). Env KITH_CA_UPSTREAM_VAULT_APPROLE_SECRET_ID_FILE.
	AppRoleSecretIDFile string `yaml:"approle_secret_id_file"`
	// KubernetesMount is the Kubernetes auth mount. Default kubernetes. Env KITH_CA_UPSTREAM_VAULT_KUBERNETES_MOUNT.
	KubernetesMount string `yaml:"kubernetes_mount"`
	// KubernetesRole is the Kubernetes auth role. Env KITH_CA_UPSTREAM_VAULT_KUBERNETES_ROLE.
	KubernetesRole string `yaml:"kubernetes_role"`
	// KubernetesTokenFile is the projected service-account token. Default
	// /var/run/secrets/kubernetes.io/serviceaccount/token. Env KITH_CA_UPSTREAM_VAULT_KUBERNETES_TOKEN_FILE.
	KubernetesTokenFile string `yaml:"kubernetes_token_file"`
}

// UpstreamStep is a step-ca that signs through its sign API; set when URL is.
type UpstreamStep struct {
	// URL of step-ca, https. Env KITH_CA_UPSTREAM_STEP_URL.
	URL string `yaml:"url"`
	// RootFile is step-ca's root (PEM). Env KITH_CA_UPSTREAM_STEP_ROOT_FILE.
	RootFile string `yaml:"root_file"`
	// Fingerprint is the SHA-256 of step-ca's root (hex), instead of or as well as root_file.
	// Env KITH_CA_UPSTREAM_STEP_FINGERPRINT.
	Fingerprint string `yaml:"fingerprint"`
	// Provisioner is the provisioner's name. Env KITH_CA_UPSTREAM_STEP_PROVISIONER.
	Provisioner string `yaml:"provisioner"`
	// PasswordFile holds the JWK provisioner's password (mode 0600). Env KITH_CA_UPSTREAM_STEP_PASSWORD_FILE.
	PasswordFile string `yaml:"password_file"`
	// KeyFile holds the JWK provisioner's private key (JSON, encrypted with password_file's password if
	// set; mode 0600). Default: fetched from step-ca. Env KITH_CA_UPSTREAM_STEP_KEY_FILE.
	KeyFile string `yaml:"key_file"`
	// X5CCertFile and X5CKeyFile: for an X5C provisioner, a certificate chain step-ca trusts (PEM) and its
	// key (0600). Env KITH_CA_UPSTREAM_STEP_X5C_CERT_FILE, KITH_CA_UPSTREAM_STEP_X5C_KEY_FILE.
	X5CCertFile string `yaml:"x5c_cert_file"`
	X5CKeyFile  string `yaml:"x5c_key_file"`
}

// UpstreamDisk is an existing CA kept on disk; set when CertFile is.
type UpstreamDisk struct {
	// CertFile is the CA certificate that signs Kith's intermediates (PEM). Env KITH_CA_UPSTREAM_DISK_CERT_FILE.
	CertFile string `yaml:"cert_file"`
	// KeyFile is its private key (PEM), mode 0600 or stricter. Env KITH_CA_UPSTREAM_DISK_KEY_FILE.
	KeyFile string `yaml:"key_file"`
	// ChainFile holds the certificates between CertFile and the root (PEM). Default none.
	// Env KITH_CA_UPSTREAM_DISK_CHAIN_FILE.
	ChainFile string `yaml:"chain_file"`
	// RootsFile holds the roots to publish (PEM). Default CertFile, which must then be self-signed.
	// Env KITH_CA_UPSTREAM_DISK_ROOTS_FILE.
	RootsFile string `yaml:"roots_file"`
}

// Kind is the configured upstream's kind ("disk"), or "" when the CA is self-signed.
func (u Upstream) Kind() string {
	var kinds []string
	if u.Disk != (UpstreamDisk{}) {
		kinds = append(kinds, "disk")
	}
	if u.Step != (UpstreamStep{}) {
		kinds = append(kinds, "step")
	}
	if u.Vault != (UpstreamVault{}) {
		kinds = append(kinds, "vault")
	}
	return strings.Join(kinds, "+")
}

func (u Upstream) validate() error {
	if u.RetryMax.D() < time.Second || u.RetryMax.D() > time.Hour {
		return &FieldError{"ca.upstream.retry_max", fmt.Sprintf("%s is outside the allowed range 1s to 1h", u.RetryMax.D())}
	}
	if k := u.Kind(); strings.Contains(k, "+") {
		return &FieldError{"ca.upstream", fmt.Sprintf("sets %s: configure one upstream authority", strings.ReplaceAll(k, "+", " and "))}
	}
	if s := u.Step; s != (UpstreamStep{}) {
		switch {
		case s.URL == "":
			return &FieldError{"ca.upstream.step.url", "is required: step-ca's https URL (e.g. https://ca.example.org:9000)"}
		case s.RootFile == "" && s.Fingerprint == "":
			return &FieldError{"ca.upstream.step.root_file", "or fingerprint is required, to trust step-ca's TLS certificate"}
		case s.Provisioner == "":
			return &FieldError{"ca.upstream.step.provisioner", "is required: the name of a JWK or X5C provisioner"}
		case s.PasswordFile == "" && s.KeyFile == "" && s.X5CCertFile == "":
			return &FieldError{"ca.upstream.step.password_file", "key_file, or x5c_cert_file and x5c_key_file, is required to get a one-time token"}
		}
	}
	if v := u.Vault; v != (UpstreamVault{}) {
		n := 0
		for _, set := range []bool{v.TokenFile != "", v.AppRoleRoleID != "" || v.AppRoleSecretIDFile != "", v.KubernetesRole != ""} {
			if set {
				n++
			}
		}
		switch {
		case v.Address == "":
			return &FieldError{"ca.upstream.vault.address", "is required: Vault's URL (e.g. https://vault.example.org:8200)"}
		case n != 1:
			return &FieldError{"ca.upstream.vault.token_file", "or approle_role_id + approle_secret_id_file, or kubernetes_role: set exactly one way to authenticate"}
		case (v.AppRoleRoleID == "") != (v.AppRoleSecretIDFile == ""):
			return &FieldError{"ca.upstream.vault.approle_secret_id_file", "and approle_role_id go together"}
		}
	}
	if u.Disk != (UpstreamDisk{}) {
		if u.Disk.CertFile == "" {
			return &FieldError{"ca.upstream.disk.cert_file", "is required: the PEM CA certificate that signs Kith's intermediates"}
		}
		if u.Disk.KeyFile == "" {
			return &FieldError{"ca.upstream.disk.key_file", "is required: the PEM private key of cert_file (mode 0600)"}
		}
	}
	return nil
}

// SVID configures identity document lifetimes.
type SVID struct {
	// X509TTL is the default X.509-SVID lifetime. Default 1h. Env KITH_SVID_X509_TTL.
	X509TTL Duration `yaml:"x509_ttl"`
	// MaxX509TTL is the longest X.509-SVID lifetime a request may ask for. Default 24h. Env KITH_SVID_MAX_X509_TTL.
	MaxX509TTL Duration `yaml:"max_x509_ttl"`
	// JWTTTL is the default JWT-SVID lifetime. Default 5m. Env KITH_SVID_JWT_TTL.
	JWTTTL Duration `yaml:"jwt_ttl"`
	// MaxJWTTTL is the longest JWT-SVID lifetime. Default 1h. Env KITH_SVID_MAX_JWT_TTL.
	MaxJWTTTL Duration `yaml:"max_jwt_ttl"`
	// MinTTL is the shortest lifetime of any SVID. Default 1m. Env KITH_SVID_MIN_TTL.
	MinTTL Duration `yaml:"min_ttl"`
	// AgentTTL is the agent SVID lifetime. Default 1h. Env KITH_SVID_AGENT_TTL.
	AgentTTL Duration `yaml:"agent_ttl"`
}

// Store configures persistence.
type Store struct {
	// Driver: sqlite (embedded, <data_dir>/kith.db) or postgres (several servers on one database, see
	// docs/ha.md). Default sqlite, or postgres when URL is a postgres:// URL. Env KITH_STORE_DRIVER.
	Driver string `yaml:"driver"`
	// DSN: for sqlite a file path (default <data_dir>/kith.db). Env KITH_STORE_DSN.
	DSN string `yaml:"dsn"`
	// URL: for postgres the database's URL, postgres://user:password@host:5432/db?sslmode=verify-full
	// (TLS as libpq: sslmode, sslrootcert, sslcert, sslkey); it may also be sqlite:///path/kith.db. Zero:
	// the driver and DSN decide. Env KITH_STORE_URL (keep the password out of the config file).
	URL string `yaml:"url"`
	// MaxConns is the postgres connection pool's size per server (one more connection listens for
	// changes). Default 10. Env KITH_STORE_MAX_CONNS.
	MaxConns int `yaml:"max_conns"`
}

// Token configures join tokens.
type Token struct {
	// TTL is the default join token lifetime. Default 1h. Env KITH_JOIN_TOKEN_TTL.
	TTL Duration `yaml:"ttl"`
	// MaxTTL is the longest join token lifetime. Default 720h (30d). Env KITH_JOIN_TOKEN_MAX_TTL.
	MaxTTL Duration `yaml:"max_ttl"`
}

// LoadServer reads the server config from path (may be empty), applies KITH_* environment overrides
// (looked up with env; nil means the process environment), fills defaults and validates.
func LoadServer(path string, env func(string) (string, bool)) (*Server, error) {
	var c Server
	if err := load(path, &c, "KITH_", env); err != nil {
		return nil, err
	}
	return &c, nil
}

// Finish fills defaults and validates; call it after command-line flags were applied.
func (c *Server) Finish() error {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	defD := func(d *Duration, v time.Duration) {
		if *d == 0 {
			*d = Duration(v)
		}
	}
	def(&c.TrustDomain, DefaultTrustDomain)
	def(&c.DataDir, "/var/lib/kith")
	def(&c.Log.Level, "info")
	def(&c.Log.Format, "text")
	def(&c.UI.Enabled, "auto")
	def(&c.Listen.GRPC, ":8081")
	def(&c.Listen.HTTP, ":8080")
	def(&c.Listen.AdminSocket, filepath.Join(c.DataDir, "admin.sock"))
	if c.Store.Driver == "postgres" || strings.HasPrefix(c.Store.URL, "postgres://") || strings.HasPrefix(c.Store.URL, "postgresql://") {
		def(&c.CA.KeyManager, "database")
	}
	def(&c.CA.KeyManager, "disk")
	def(&c.CA.Organization, "Kith")
	defD(&c.CA.RootTTL, 365*24*time.Hour)
	defD(&c.CA.IntermediateTTL, 7*24*time.Hour)
	defD(&c.SVID.X509TTL, time.Hour)
	defD(&c.SVID.MaxX509TTL, 24*time.Hour)
	defD(&c.SVID.JWTTTL, 5*time.Minute)
	defD(&c.SVID.MaxJWTTTL, time.Hour)
	defD(&c.SVID.MinTTL, time.Minute)
	for _, l := range []struct {
		v   *int64
		def int64
	}{{&c.Policy.Git.MaxFileBytes, 1 << 20}, {&c.Policy.Git.MaxDataBytes, 16 << 20}, {&c.Policy.Git.MaxFiles, 1000}, {&c.Policy.Git.MaxTotalBytes, 32 << 20}, {&c.Policy.Git.MaxFetchBytes, 256 << 20}} {
		if *l.v == 0 {
			*l.v = l.def
		}
	}
	defD(&c.SVID.AgentTTL, time.Hour)
	defD(&c.CA.RootOverlap, 2*c.SVID.MaxX509TTL.D())
	defD(&c.CA.Upstream.RetryMax, 30*time.Second)
	switch u := c.Store.URL; {
	case strings.HasPrefix(u, "postgres://") || strings.HasPrefix(u, "postgresql://"):
		def(&c.Store.Driver, "postgres")
	case strings.HasPrefix(u, "sqlite://"):
		def(&c.Store.Driver, "sqlite")
		def(&c.Store.DSN, strings.TrimPrefix(u, "sqlite://"))
	}
	def(&c.Store.Driver, "sqlite")
	if c.Store.MaxConns == 0 {
		c.Store.MaxConns = 10
	}
	if c.Store.Driver == "sqlite" {
		def(&c.Store.DSN, filepath.Join(c.DataDir, "kith.db"))
	}
	defD(&c.Token.TTL, time.Hour)
	defD(&c.Token.MaxTTL, 30*24*time.Hour)
	defD(&c.Users.SVIDTTL, 8*time.Hour)
	defD(&c.Users.LoginTTL, 7*24*time.Hour)
	defD(&c.Users.CodeTTL, 24*time.Hour)
	if c.Admin.Listen != "" && c.Admin.URL == "" {
		if host, port, err := net.SplitHostPort(c.Admin.Listen); err == nil {
			if host == "" || host == "0.0.0.0" || host == "::" {
				host = "localhost"
			}
			c.Admin.URL = "https://" + net.JoinHostPort(host, port)
		}
	}
	if o := &c.Users.OIDC; o.Issuer != "" {
		def(&o.DeviceClientID, o.ClientID)
		def(&o.UsernameClaim, "preferred_username")
		def(&o.GroupsClaim, "groups")
		if len(o.Scopes) == 0 {
			o.Scopes = []string{"openid", "profile", "email"}
		}
	}
	if c.Listen.AdvertiseHTTP == "" {
		host, port, err := net.SplitHostPort(c.Listen.HTTP)
		if err == nil {
			if host == "" || host == "0.0.0.0" || host == "::" {
				host = "localhost"
			}
			c.Listen.AdvertiseHTTP = "http://" + net.JoinHostPort(host, port)
		}
	}
	return c.validate()
}

func (c *Server) validate() error {
	if _, err := spiffeid.TrustDomainFromString(c.TrustDomain); err != nil {
		return &FieldError{"trust_domain", fmt.Sprintf("%q is not a valid trust domain (%v): use a lowercase DNS-like name such as example.org", c.TrustDomain, err)}
	}
	if !filepath.IsAbs(c.DataDir) {
		abs, err := filepath.Abs(c.DataDir)
		if err != nil {
			return &FieldError{"data_dir", err.Error()}
		}
		c.DataDir = abs
	}
	if err := oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error"); err != nil {
		return err
	}
	if err := oneOf("log.format", c.Log.Format, "text", "json"); err != nil {
		return err
	}
	if err := oneOf("ui.enabled", c.UI.Enabled, "auto", "true", "false"); err != nil {
		return err
	}
	for _, a := range []struct{ field, addr string }{{"listen.grpc", c.Listen.GRPC}, {"listen.http", c.Listen.HTTP}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return &FieldError{a.field, fmt.Sprintf("%q is not host:port (e.g. :8081 or 127.0.0.1:8081)", a.addr)}
		}
	}
	for _, ids := range []struct {
		field string
		ids   []int
	}{{"admin.allowed_uids", c.Admin.AllowedUIDs}, {"admin.allowed_gids", c.Admin.AllowedGIDs}} {
		for _, id := range ids.ids {
			if id < 0 || id > math.MaxUint32-1 {
				return &FieldError{ids.field, fmt.Sprintf("%d is not a uid or gid (0 to 4294967294)", id)}
			}
		}
	}
	if c.Admin.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Admin.Listen); err != nil {
			return &FieldError{"admin.listen", fmt.Sprintf("%q is not host:port (e.g. :8443 or 127.0.0.1:8443)", c.Admin.Listen)}
		}
	}
	if err := c.Users.validate(); err != nil {
		return err
	}
	if err := oneOf("ca.key_manager", c.CA.KeyManager, append(keymanager.Names(), "database")...); err != nil {
		return err
	}
	switch {
	case c.CA.KeyManager == "database" && c.Store.Driver != "postgres":
		return &FieldError{"ca.key_manager", "database keeps the CA keys in the postgres store: set store.driver postgres and store.url, or use disk"}
	case c.CA.KeyManager == "database" && c.CA.KEKFile == "":
		return &FieldError{"ca.kek_file", "the database key manager seals the CA keys under a key-encryption key: set ca.kek_file (KITH_CA_KEK_FILE) to a 0600 file holding 32 random bytes (head -c 32 /dev/urandom | base64), the same on every server"}
	}
	if c.ServerName != "" {
		if !ca.ValidServerName(c.ServerName) {
			return &FieldError{"server_name", fmt.Sprintf("%q is not 1 to 63 letters, digits, '.', '_' or '-': set server_name (KITH_SERVER_NAME) to a short name for this server, such as kith-0", c.ServerName)}
		}
	}
	if err := oneOf("store.driver", c.Store.Driver, "sqlite", "postgres"); err != nil {
		return err
	}
	if err := c.Store.validate(); err != nil {
		return err
	}
	if err := c.Policy.Git.validate(c.Policy.Dir); err != nil {
		return err
	}
	type bound struct {
		field string
		v, lo time.Duration
		hi    time.Duration
	}
	checks := []bound{
		{"svid.min_ttl", c.SVID.MinTTL.D(), 10 * time.Second, time.Hour},
		{"svid.x509_ttl", c.SVID.X509TTL.D(), c.SVID.MinTTL.D(), c.SVID.MaxX509TTL.D()},
		{"svid.jwt_ttl", c.SVID.JWTTTL.D(), c.SVID.MinTTL.D(), c.SVID.MaxJWTTTL.D()},
		{"svid.agent_ttl", c.SVID.AgentTTL.D(), c.SVID.MinTTL.D(), c.SVID.MaxX509TTL.D()},
		{"ca.intermediate_ttl", c.CA.IntermediateTTL.D(), 2 * c.SVID.MaxX509TTL.D(), c.CA.RootTTL.D() - c.CA.RootOverlap.D()},
		{"join_token.ttl", c.Token.TTL.D(), time.Minute, c.Token.MaxTTL.D()},
	}
	for _, b := range checks {
		if b.v < b.lo || b.v > b.hi {
			return &FieldError{b.field, fmt.Sprintf("%s is outside the allowed range %s to %s", b.v, b.lo, b.hi)}
		}
	}
	if c.CA.JWTIssuer != "" {
		u, err := url.Parse(c.CA.JWTIssuer)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" ||
			strings.HasSuffix(u.Path, "/") {
			return &FieldError{"ca.jwt_issuer", fmt.Sprintf("%q is not an http(s) URL without query, fragment or trailing slash (e.g. https://kith.example.org)", c.CA.JWTIssuer)}
		}
	}
	if c.CA.RootOverlap.D() < 0 {
		return &FieldError{"ca.root_overlap", "must not be negative"}
	}
	if err := c.CA.Upstream.validate(); err != nil {
		return err
	}
	if c.Listen.OIDCDiscovery != "" {
		if _, _, err := net.SplitHostPort(c.Listen.OIDCDiscovery); err != nil {
			return &FieldError{"listen.oidc_discovery", fmt.Sprintf("%q is not host:port (e.g. :8443)", c.Listen.OIDCDiscovery)}
		}
	}
	if err := c.Federation.BundleEndpoint.validate(); err != nil {
		return err
	}
	return c.NodeAttestors.K8sPSAT.validate(c.TrustDomain)
}

func (u *Users) validate() error {
	for _, b := range []struct {
		field  string
		v, min time.Duration
	}{{"users.svid_ttl", u.SVIDTTL.D(), time.Minute}, {"users.login_ttl", u.LoginTTL.D(), time.Minute}, {"users.code_ttl", u.CodeTTL.D(), time.Minute}} {
		if b.v < b.min {
			return &FieldError{b.field, fmt.Sprintf("%s is shorter than %s", b.v, b.min)}
		}
	}
	o := u.OIDC
	if o.Issuer == "" {
		if o.ClientID != "" || o.DeviceClientID != "" {
			return &FieldError{"users.oidc.issuer", "is not set but a client ID is: set the provider's issuer URL"}
		}
		return nil
	}
	if p, err := url.Parse(o.Issuer); err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
		return &FieldError{"users.oidc.issuer", fmt.Sprintf("%q is not an http(s) URL", o.Issuer)}
	}
	if o.ClientID == "" {
		return &FieldError{"users.oidc.client_id", "is required with users.oidc.issuer: the client registered at the provider for kith login"}
	}
	if err := oneOf("users.oidc.username_claim", o.UsernameClaim, "preferred_username", "email"); err != nil {
		return err
	}
	for g, l := range o.GroupLabels {
		if k, v, ok := strings.Cut(l, "="); !ok || k == "" || v == "" {
			return &FieldError{"users.oidc.group_labels", fmt.Sprintf("group %q maps to %q: want key=value, e.g. team=payments", g, l)}
		}
	}
	return nil
}

// clusterName is what a k8s_psat cluster name may be: one SPIFFE ID path segment, short and plain.
var clusterName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

func (k *K8sPSAT) validate(trustDomain string) error {
	seen := map[string]bool{}
	for i := range k.Clusters {
		c := &k.Clusters[i]
		field := fmt.Sprintf("node_attestors.k8s_psat.clusters[%d]", i)
		if !clusterName.MatchString(c.Name) {
			return &FieldError{field + ".name", fmt.Sprintf("%q is not 1 to 63 letters, digits, '.', '_' or '-' (e.g. prod-eu)", c.Name)}
		}
		if c.Controllers {
			for _, o := range k.Clusters[:i] {
				if o.Controllers {
					return &FieldError{field + ".controllers", fmt.Sprintf("cluster %q has them already: KithIdentity and KithGrant are watched in one cluster", o.Name)}
				}
			}
		}
		if seen[c.Name] {
			return &FieldError{field + ".name", fmt.Sprintf("cluster %q is listed twice", c.Name)}
		}
		seen[c.Name] = true
		if len(c.ServiceAccounts) == 0 {
			return &FieldError{field + ".service_accounts", "list the service accounts agents run as, e.g. [kith:kith-agent]; any other is refused"}
		}
		for _, sa := range c.ServiceAccounts {
			ns, name, ok := strings.Cut(sa, ":")
			if !ok || ns == "" || name == "" || strings.Contains(name, ":") {
				return &FieldError{field + ".service_accounts", fmt.Sprintf("%q is not namespace:name (e.g. kith:kith-agent)", sa)}
			}
		}
		if c.Audience == "" {
			c.Audience = "kith"
		}
		if c.ServiceAccountTemplate == "" {
			c.ServiceAccountTemplate = DefaultServiceAccountTemplate
		}
		if err := checkServiceAccountTemplate(c.ServiceAccountTemplate, trustDomain); err != nil {
			return &FieldError{field + ".service_account_template", err.Error()}
		}
		if c.Kubeconfig != "" {
			abs, err := filepath.Abs(c.Kubeconfig)
			if err != nil {
				return &FieldError{field + ".kubeconfig", err.Error()}
			}
			c.Kubeconfig = abs
		}
	}
	return nil
}

func oneOf(field, v string, allowed ...string) error {
	if slices.Contains(allowed, v) {
		return nil
	}
	return &FieldError{field, fmt.Sprintf("%q is not one of %s", v, strings.Join(allowed, ", "))}
}

func (g *PolicyGit) validate(dir string) error {
	if g.URL == "" {
		for _, f := range []struct{ field, v string }{{"ref", g.Ref}, {"path", g.Path}, {"token", g.Token}, {"ssh_key_file", g.SSHKeyFile}, {"webhook_secret", g.WebhookSecret}} {
			if f.v != "" {
				return &FieldError{"policy.git." + f.field, "is set but policy.git.url is not: set the repository URL"}
			}
		}
		return nil
	}
	if dir != "" {
		return &FieldError{"policy.git.url", "policy.dir and policy.git.url are both set: choose one"}
	}
	switch {
	case strings.HasPrefix(g.URL, "https://"), strings.HasPrefix(g.URL, "ssh://"), strings.HasPrefix(g.URL, "file://"),
		filepath.IsAbs(g.URL), strings.HasPrefix(g.URL, "."):
	case strings.HasPrefix(g.URL, "http://"):
		return &FieldError{"policy.git.url", fmt.Sprintf("%q is plain http: use https:// so that policy cannot be altered in transit", g.URL)}
	default:
		return &FieldError{"policy.git.url", fmt.Sprintf("%q: want https://, ssh://, file:// or a local path", g.URL)}
	}
	if g.Token != "" && !strings.HasPrefix(g.URL, "https://") {
		return &FieldError{"policy.git.token", "a token is only sent to https:// remotes"}
	}
	if g.SSHKeyFile != "" && !strings.HasPrefix(g.URL, "ssh://") {
		return &FieldError{"policy.git.ssh_key_file", "an ssh key is only used for ssh:// remotes"}
	}
	if strings.Contains(g.Path, "..") {
		return &FieldError{"policy.git.path", fmt.Sprintf("%q must stay inside the repository", g.Path)}
	}
	for _, l := range []struct {
		field string
		v     int64
	}{{"policy.git.max_file_bytes", g.MaxFileBytes}, {"policy.git.max_data_bytes", g.MaxDataBytes}, {"policy.git.max_files", g.MaxFiles}, {"policy.git.max_total_bytes", g.MaxTotalBytes}, {"policy.git.max_fetch_bytes", g.MaxFetchBytes}} {
		if l.v < 0 {
			return &FieldError{l.field, fmt.Sprintf("%d: a limit must be positive (0: the default)", l.v)}
		}
	}
	if g.PollInterval != 0 && g.PollInterval.D() < time.Second {
		return &FieldError{"policy.git.poll_interval", "must be at least 1s"}
	}
	if g.Timeout != 0 && g.Timeout.D() < time.Second {
		return &FieldError{"policy.git.timeout", "must be at least 1s"}
	}
	return nil
}

// DefaultServiceAccountTemplate is the SPIFFE ID of a service account unless a cluster names another: the
// same as a KithIdentity's default spiffeIDTemplate.
const DefaultServiceAccountTemplate = "spiffe://{{.TrustDomain}}/ns/{{.Namespace}}/sa/{{.ServiceAccount}}"

// checkServiceAccountTemplate parses t and expands it for a sample service account: the result must be a
// SPIFFE ID in the trust domain, and must change with the namespace and the name (else every shorthand
// would name one identity).
func checkServiceAccountTemplate(t, trustDomain string) error {
	tmpl, err := template.New("service_account_template").Option("missingkey=error").Parse(t)
	if err != nil {
		return fmt.Errorf("%q is not a Go template: %v", t, err)
	}
	expand := func(ns, sa string) (string, error) {
		var b strings.Builder
		err := tmpl.Execute(&b, struct{ TrustDomain, Namespace, ServiceAccount string }{trustDomain, ns, sa})
		return b.String(), err
	}
	a, err := expand("ns-a", "sa-a")
	if err != nil {
		return fmt.Errorf("%q does not expand (it may use .TrustDomain, .Namespace and .ServiceAccount): %v", t, err)
	}
	id, err := spiffeid.FromString(a)
	if err != nil {
		return fmt.Errorf("%q gives %q, not a SPIFFE ID (e.g. %s)", t, a, DefaultServiceAccountTemplate)
	}
	if id.TrustDomain().Name() != trustDomain {
		return fmt.Errorf("%q gives %q, outside the trust domain %s", t, a, trustDomain)
	}
	b, _ := expand("ns-b", "sa-a")
	c, _ := expand("ns-a", "sa-b")
	if a == b || a == c {
		return fmt.Errorf("%q must use both .Namespace and .ServiceAccount, or every shorthand names one identity", t)
	}
	return nil
}

func (s Store) validate() error {
	switch {
	case s.Driver == "postgres" && s.URL == "":
		return &FieldError{"store.url", "the postgres driver needs the database's URL: set store.url or KITH_STORE_URL to postgres://user:password@host:5432/db?sslmode=verify-full"}
	case s.Driver == "postgres" && !strings.HasPrefix(s.URL, "postgres://") && !strings.HasPrefix(s.URL, "postgresql://"):
		return &FieldError{"store.url", "the postgres driver takes a postgres:// URL (postgres://user:password@host:5432/db?sslmode=verify-full); the URL given has another scheme"}
	case s.Driver == "sqlite" && s.URL != "" && !strings.HasPrefix(s.URL, "sqlite://"):
		return &FieldError{"store.url", "with store.driver sqlite the URL must be sqlite:///path/kith.db (or leave it empty and set store.dsn)"}
	case s.MaxConns < 1 || s.MaxConns > 1000:
		return &FieldError{"store.max_conns", fmt.Sprintf("%d is not a pool size: use 1 to 1000 (default 10)", s.MaxConns)}
	}
	return nil
}

func (b *BundleEndpoint) validate() error {
	const f = "federation.bundle_endpoint."
	if b.Address == "" {
		for _, o := range []struct{ field, v string }{{"profile", b.Profile}, {"cert_file", b.CertFile}, {"key_file", b.KeyFile}} {
			if o.v != "" {
				return &FieldError{f + o.field, "is set but " + f + "address is not: set the address to serve the bundle on"}
			}
		}
		return nil
	}
	if _, _, err := net.SplitHostPort(b.Address); err != nil {
		return &FieldError{f + "address", fmt.Sprintf("%q is not host:port (e.g. :8443)", b.Address)}
	}
	if b.Profile == "" {
		b.Profile = "https_spiffe"
	}
	if err := oneOf(f+"profile", b.Profile, "https_spiffe", "https_web"); err != nil {
		return err
	}
	switch {
	case b.Profile == "https_web" && (b.CertFile == "" || b.KeyFile == ""):
		return &FieldError{f + "cert_file", "https_web serves a Web PKI certificate: set cert_file and key_file (PEM)"}
	case b.Profile == "https_spiffe" && (b.CertFile != "" || b.KeyFile != ""):
		return &FieldError{f + "cert_file", "https_spiffe serves the server's own SVID: cert_file and key_file are for https_web"}
	}
	if h := b.RefreshHint.D(); h != 0 && (h < time.Second || h > 24*time.Hour) {
		return &FieldError{f + "refresh_hint", fmt.Sprintf("%s is outside the allowed range 1s to 24h", h)}
	}
	return nil
}
