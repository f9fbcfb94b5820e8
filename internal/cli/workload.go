package cli

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultAgentSocket is the agent's Workload API socket unless configured otherwise.
const DefaultAgentSocket = "/run/kith/agent.sock"

// The commands here are a workload's side of the Workload API: what `kith svid fetch` and
// `kith agent healthcheck` see is exactly what go-spiffe, spiffe-helper or Envoy would see, through the
// same client library, attested as the process that runs them.

// workloadAddr is the Workload API address: flag, else $SPIFFE_ENDPOINT_SOCKET, else the default socket.
// A plain path is taken as a unix socket.
func (e *env) workloadAddr(flag string) string {
	s := flag
	if s == "" {
		s = e.getenv("SPIFFE_ENDPOINT_SOCKET")
	}
	if s == "" {
		s = DefaultAgentSocket
	}
	if !strings.Contains(s, "://") {
		if abs, err := filepath.Abs(s); err == nil {
			s = abs
		}
		s = "unix://" + s
	}
	return s
}

// checkSocket fails early, and clearly, when a unix socket address names no socket.
func checkSocket(addr string) error {
	path, ok := strings.CutPrefix(addr, "unix://")
	if !ok {
		return nil
	}
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return fmt.Errorf("no Workload API socket at %s (is `kith agent` running? set --socket or SPIFFE_ENDPOINT_SOCKET)", path)
	case fi.Mode()&os.ModeSocket == 0:
		return fmt.Errorf("%s is not a socket (set --socket or SPIFFE_ENDPOINT_SOCKET to the agent's)", path)
	}
	return nil
}

// workloadError says what a Workload API error means for the process that got it.
func workloadError(err error, addr string) error {
	s, ok := status.FromError(err)
	switch {
	case errors.Is(err, context.DeadlineExceeded) || ok && s.Code() == codes.DeadlineExceeded:
		return fmt.Errorf("no answer from the agent on %s in time (is `kith agent` running? set --socket or SPIFFE_ENDPOINT_SOCKET)", addr)
	case !ok:
		return err
	case s.Code() == codes.PermissionDenied:
		return fmt.Errorf("the agent attested this process (uid %d) but no registration entry matches it: %s (create one with `kith entry create --selector unix:uid:%d ...`)",
			os.Getuid(), s.Message(), os.Getuid())
	case s.Code() == codes.Unimplemented:
		return fmt.Errorf("%s does not serve the SPIFFE Workload API (%s): set --socket or SPIFFE_ENDPOINT_SOCKET to the agent's socket", addr, s.Message())
	case s.Code() == codes.Unavailable:
		return fmt.Errorf("the agent on %s cannot serve: %s (is `kith agent` running and joined? set --socket or SPIFFE_ENDPOINT_SOCKET)", addr, s.Message())
	default:
		return fmt.Errorf("workload api on %s: %s: %s", addr, s.Code(), s.Message())
	}
}

func (e *env) svidFetchCommand() *cobra.Command {
	var (
		socket, write, subject string
		audiences              []string
		timeout                time.Duration
	)
	cmd := &cobra.Command{
		Use:   "fetch [--socket PATH] [--write DIR] [--audience A [--spiffe-id ID]]",
		Short: "Fetch this process's own SVIDs and bundles from the agent's Workload API, as a workload does",
		Long: `Fetch this process's own SVIDs and bundles from the agent's Workload API, as a workload does.

The agent attests the process running this command (its uid, gid, executable, ...) and returns the
X.509-SVIDs of every entry that matches it; with --audience, JWT-SVIDs for that audience instead.
--write DIR writes svid.N.pem (certificate chain), svid.N.key (private key, mode 0600), bundle.N.pem (the
roots of the SVID's trust domain) and federated_bundle.N.M.pem; private keys are never printed.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			addr := e.workloadAddr(socket)
			if err := checkSocket(addr); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			if len(audiences) > 0 {
				return e.fetchJWT(ctx, addr, audiences, subject)
			}
			if subject != "" {
				return fmt.Errorf("--spiffe-id picks a JWT-SVID: give --audience too")
			}
			return e.fetchX509(ctx, addr, write)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&socket, "socket", "", "Workload API socket, a path or unix:// URI (default $SPIFFE_ENDPOINT_SOCKET, else "+DefaultAgentSocket+")")
	fl.StringVar(&write, "write", "", "write the SVIDs, keys and bundles as PEM files into this directory")
	fl.StringSliceVar(&audiences, "audience", nil, "fetch JWT-SVIDs for this audience (repeat for more)")
	fl.StringVar(&subject, "spiffe-id", "", "with --audience: only the JWT-SVID for this SPIFFE ID")
	durationVar(fl, &timeout, "timeout", 5*time.Second, "how long to wait for the agent")
	return cmd
}

func (e *env) fetchX509(ctx context.Context, addr, dir string) error {
	x, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		return &exitError{code: 1, err: workloadError(err, addr)}
	}
	var written []string
	if dir != "" {
		if written, err = writeX509Context(dir, x); err != nil {
			return err
		}
	}
	type svidOut struct {
		SPIFFEID  string `json:"spiffe_id"`
		Hint      string `json:"hint,omitempty"`
		ExpiresAt string `json:"expires_at"`
		ChainPEM  string `json:"cert_chain_pem"`
	}
	var svids []svidOut
	for _, s := range x.SVIDs {
		svids = append(svids, svidOut{SPIFFEID: s.ID.String(), Hint: s.Hint, ExpiresAt: s.Certificates[0].NotAfter.UTC().Format(time.RFC3339),
			ChainPEM: string(pemCerts(s.Certificates))})
	}
	bundles := map[string]int{}
	for _, b := range x.Bundles.Bundles() {
		bundles[b.TrustDomain().Name()] = len(b.X509Authorities())
	}
	return e.print(map[string]any{"svids": svids, "bundle_roots": bundles, "written": written}, func() {
		rows := make([][]string, 0, len(svids))
		for i, s := range svids {
			rows = append(rows, []string{s.SPIFFEID, s.Hint, s.ExpiresAt, strconv.Itoa(len(x.SVIDs[i].Certificates))})
		}
		e.table([]string{"SPIFFE ID", "HINT", "EXPIRES", "CERTS"}, rows)
		var tds []string
		for _, td := range slices.Sorted(maps.Keys(bundles)) {
			tds = append(tds, fmt.Sprintf("%s (%d roots)", td, bundles[td]))
		}
		fmt.Fprintf(e.stdout, "bundles: %s\n", strings.Join(tds, ", "))
		for _, f := range written {
			fmt.Fprintf(e.stdout, "wrote %s\n", f)
		}
	})
}

func pemCerts(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// writeX509Context writes the files `kith svid fetch --write` promises and returns their paths.
func writeX509Context(dir string, x *workloadapi.X509Context) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("--write: %w", err)
	}
	var written []string
	write := func(name string, data []byte, private bool) error {
		p := filepath.Join(dir, name)
		var err error
		if private {
			err = writePrivate(p, data)
		} else {
			err = os.WriteFile(p, data, 0o644)
		}
		if err != nil {
			return fmt.Errorf("--write: %w", err)
		}
		written = append(written, p)
		return nil
	}
	for i, s := range x.SVIDs {
		keyDER, err := x509.MarshalPKCS8PrivateKey(s.PrivateKey)
		if err != nil {
			return nil, fmt.Errorf("encode the key of %s: %w", s.ID, err)
		}
		if err := write(fmt.Sprintf("svid.%d.pem", i), pemCerts(s.Certificates), false); err != nil {
			return nil, err
		}
		if err := write(fmt.Sprintf("svid.%d.key", i), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), true); err != nil {
			return nil, err
		}
		own, err := x.Bundles.GetX509BundleForTrustDomain(s.ID.TrustDomain())
		if err != nil {
			return nil, fmt.Errorf("no bundle for %s: %w", s.ID, err)
		}
		if err := write(fmt.Sprintf("bundle.%d.pem", i), pemCerts(own.X509Authorities()), false); err != nil {
			return nil, err
		}
		j := 0
		for _, b := range sortedBundles(x.Bundles) {
			if b.TrustDomain() == s.ID.TrustDomain() {
				continue
			}
			if err := write(fmt.Sprintf("federated_bundle.%d.%d.pem", i, j), pemCerts(b.X509Authorities()), false); err != nil {
				return nil, err
			}
			j++
		}
	}
	return written, nil
}

func sortedBundles(s *x509bundle.Set) []*x509bundle.Bundle {
	bs := s.Bundles()
	slices.SortFunc(bs, func(a, b *x509bundle.Bundle) int {
		return strings.Compare(a.TrustDomain().Name(), b.TrustDomain().Name())
	})
	return bs
}

func (e *env) fetchJWT(ctx context.Context, addr string, audiences []string, subject string) error {
	params := jwtsvid.Params{Audience: audiences[0], ExtraAudiences: audiences[1:]}
	if subject != "" {
		id, err := spiffeid.FromString(subject)
		if err != nil {
			return fmt.Errorf("--spiffe-id %q: %w", subject, err)
		}
		params.Subject = id
	}
	svids, err := workloadapi.FetchJWTSVIDs(ctx, params, workloadapi.WithAddr(addr))
	if err != nil && subject != "" {
		// The agent refuses a subject the caller does not hold as if no entry matched: say which it holds.
		if own, ferr := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr(addr)); ferr == nil && len(own) > 0 {
			ids := make([]string, len(own))
			for i, s := range own {
				ids[i] = s.ID.String()
			}
			return &exitError{code: 1, err: fmt.Errorf("--spiffe-id %s is not among this workload's identities; it has %s", subject, strings.Join(ids, ", "))}
		}
	}
	if err != nil {
		return &exitError{code: 1, err: workloadError(err, addr)}
	}
	out := make([]map[string]any, 0, len(svids))
	for _, s := range svids {
		out = append(out, map[string]any{"spiffe_id": s.ID.String(), "hint": s.Hint, "audience": s.Audience,
			"expires_at": s.Expiry.UTC().Format(time.RFC3339), "token": s.Marshal()})
	}
	return e.print(out, func() {
		if len(svids) == 1 { // as `kith svid mint jwt`: just the token, for TOKEN=$(...)
			fmt.Fprintln(e.stdout, svids[0].Marshal())
			return
		}
		for _, s := range svids {
			fmt.Fprintf(e.stdout, "%s %s\n", s.ID, s.Marshal())
		}
	})
}

// agentHealthcheckCommand is `kith agent healthcheck`: the agent is healthy when its Workload API answers
// this process, with SVIDs or with "no entry matches you"; not when the socket is missing, nothing
// answers, or the agent has no trust bundle yet.
func (e *env) agentHealthcheckCommand() *cobra.Command {
	var socket string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "healthcheck [--socket PATH]",
		Short: "Exit 0 if the agent's Workload API serves (for liveness probes), 1 if not",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			addr := e.workloadAddr(socket)
			if err := checkSocket(addr); err != nil {
				return &exitError{code: 1, err: fmt.Errorf("agent is unhealthy: %w", err)}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			_, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr(addr))
			if s, ok := status.FromError(err); err == nil || ok && s.Code() == codes.PermissionDenied {
				fmt.Fprintln(e.stdout, "Agent is healthy.")
				return nil
			}
			return &exitError{code: 1, err: fmt.Errorf("agent is unhealthy: %w", workloadError(err, addr))}
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "", "Workload API socket, a path or unix:// URI (default $SPIFFE_ENDPOINT_SOCKET, else "+DefaultAgentSocket+")")
	durationVar(cmd.Flags(), &timeout, "timeout", 5*time.Second, "how long to wait for the agent")
	return cmd
}
