package cli

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/kithid/kith/internal/agent"
	"github.com/kithid/kith/internal/config"
)

func init() {
	extraCommands = append(extraCommands, (*env).agentCommand)
}

func (e *env) agentCommand() *cobra.Command {
	var path string
	var f config.Agent
	cmd := &cobra.Command{
		Use:   "agent [-c agent.yaml] [--server host:port] [--join-token T] [--trust-bundle FILE]",
		Short: "Run the node agent: attest the node, serve the Workload API and SDS to attested workloads",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.LoadAgent(path, lookupEnv(e.getenv))
			if err != nil {
				return err
			}
			fl := cmd.Flags()
			set := func(name string, dst *string, v string) {
				if fl.Changed(name) {
					*dst = v
				}
			}
			set("server", &cfg.Server, f.Server)
			set("join-token", &cfg.JoinToken, f.JoinToken)
			set("trust-bundle", &cfg.TrustBundle, f.TrustBundle)
			set("trust-bundle-url", &cfg.TrustBundleURL, f.TrustBundleURL)
			set("data-dir", &cfg.DataDir, f.DataDir)
			set("socket", &cfg.Socket, f.Socket)
			set("sds-socket", &cfg.SDSSocket, f.SDSSocket)
			set("trust-domain", &cfg.TrustDomain, f.TrustDomain)
			set("log-level", &cfg.Log.Level, f.Log.Level)
			if fl.Changed("insecure-bootstrap") {
				cfg.InsecureBootstrap = f.InsecureBootstrap
			}
			if err := cfg.Finish(); err != nil {
				return fmt.Errorf("invalid configuration: %w", err)
			}
			a, err := newAgent(cfg, newLogger(e.stderr, cfg.Log))
			if err != nil {
				return err
			}
			return plain(a.Run(cmd.Context()))
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&path, "config", "c", "", "YAML config file (every field optional)")
	fl.StringVar(&f.Server, "server", "", "server agent API address host:port (default localhost:8081)")
	fl.StringVar(&f.JoinToken, "join-token", "", "one-time join token from kith token create (first start, or to rejoin after eviction); other users can read a command line: prefer KITH_AGENT_JOIN_TOKEN or join_token in the config file")
	fl.StringVar(&f.TrustBundle, "trust-bundle", "", "PEM file with the server's roots (from kith bundle show)")
	fl.StringVar(&f.TrustBundleURL, "trust-bundle-url", "", "fetch the bundle from the server's http://HOST:8080/v1/bundle (needs --insecure-bootstrap)")
	fl.BoolVar(&f.InsecureBootstrap, "insecure-bootstrap", false, "trust the bundle from --trust-bundle-url without verification (logged)")
	fl.StringVar(&f.DataDir, "data-dir", "", "agent state directory (default /var/lib/kith-agent)")
	fl.StringVar(&f.Socket, "socket", "", "Workload API + SDS socket (default /run/kith/agent.sock)")
	fl.StringVar(&f.SDSSocket, "sds-socket", "", "also serve SDS on this socket")
	fl.StringVar(&f.TrustDomain, "trust-domain", "", "trust domain (default: that of the saved agent SVID, else the one the trust bundle names, else example.org)")
	fl.StringVar(&f.Log.Level, "log-level", "", "debug, info, warn or error")
	cmd.AddCommand(e.agentHealthcheckCommand())
	return cmd
}

// newAgent builds an agent with every service its socket offers.
func newAgent(cfg *config.Agent, log *slog.Logger) (*agent.Agent, error) {
	return agent.New(agent.Config{Config: cfg, Logger: log})
}
