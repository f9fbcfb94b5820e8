package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/internal/config"
	"github.com/kithid/kith/internal/server"
)

func (e *env) serverCommand() *cobra.Command {
	var path, dataDir, td, logLevel string
	var reinit bool
	cmd := &cobra.Command{
		Use:   "server [-c server.yaml] [--data-dir DIR] [--trust-domain TD]",
		Short: "Run the Kith server: CA, store, admin and agent APIs, metrics",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.LoadServer(path, lookupEnv(e.getenv))
			if err != nil {
				return err
			}
			if dataDir != "" {
				cfg.DataDir = dataDir
			}
			if td != "" {
				cfg.TrustDomain = td
			}
			if logLevel != "" {
				cfg.Log.Level = logLevel
			}
			if err := cfg.Finish(); err != nil {
				return fmt.Errorf("invalid configuration: %w", err)
			}
			log := newLogger(e.stderr, cfg.Log)
			srv, err := server.New(cmd.Context(), server.Config{Config: cfg, Logger: log, Version: Version, Reinit: reinit})
			if err != nil {
				return err
			}
			return plain(srv.Run(cmd.Context()))
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "YAML config file (every field optional)")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "data directory (default /var/lib/kith; env KITH_DATA_DIR)")
	cmd.Flags().StringVar(&td, "trust-domain", "", "trust domain (default example.org; env KITH_TRUST_DOMAIN)")
	cmd.Flags().StringVar(&logLevel, "log-level", "", "debug, info, warn or error (env KITH_LOG_LEVEL)")
	cmd.Flags().BoolVar(&reinit, "reinit", false, "start over with a new CA on a data dir whose database is missing or empty: the old keys and database are moved aside to <data-dir>/replaced-<time>, and the new audit log records the old root's fingerprint")
	cmd.AddCommand(e.serverHealthcheckCommand())
	return cmd
}

// serverHealthcheckCommand is `kith server healthcheck`, as `spire-server healthcheck`: the server is
// healthy when its admin API answers on the admin socket with a trust bundle that has X.509 roots (the
// store is open and the CA has its keys).
func (e *env) serverHealthcheckCommand() *cobra.Command {
	var timeout time.Duration
	var quiet bool
	cmd := &cobra.Command{
		Use:   "healthcheck [--admin-socket PATH]",
		Short: "Exit 0 if the server's admin API answers with a trust bundle (for probes), 1 if not",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			resp, err := call(ctx, e, adminv1.AdminServiceClient.GetBundle, &adminv1.GetBundleRequest{}, grpc.WaitForReady(true))
			if err == nil && len(resp.GetX509Authorities()) == 0 {
				err = errors.New("the trust bundle has no X.509 roots")
			}
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("server is unhealthy: %s", describe(err, e.adminSocket))}
			}
			if !quiet {
				fmt.Fprintln(e.stdout, "Server is healthy.")
			}
			return nil
		},
	}
	durationVar(cmd.Flags(), &timeout, "timeout", 5*time.Second, "how long to wait for the server")
	cmd.Flags().BoolVar(&quiet, "quiet", false, "print nothing, only set the exit code")
	return cmd
}

// lookupEnv adapts a getenv function to config's lookup, treating empty as unset.
func lookupEnv(getenv func(string) string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v := getenv(k)
		return v, v != ""
	}
}

func newLogger(w io.Writer, c config.Log) *slog.Logger {
	if w == nil {
		w = os.Stderr
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// plain drops the gRPC status wrapping of an error from a long-running process, so the CLI does not
// mistake it for an admin API error and add the admin socket hint.
func plain(err error) error {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok {
		return errors.New(st.Message())
	}
	return err
}
