package cli

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

// execCommand runs a command as the logged-in user: SPIFFE_ENDPOINT_SOCKET points at a Workload API, served
// by this process on a private socket for as long as the command runs, that hands out the user's SVID.
func (e *env) execCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "exec -- COMMAND [ARG...]",
		Short: "Run COMMAND as you: a Workload API on SPIFFE_ENDPOINT_SOCKET serves your SVID while it runs",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usage(errors.New("kith exec needs a command: kith exec -- COMMAND [ARG...]"))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			l, err := e.loadLogin()
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					return errors.New("you are not logged in: run kith login first")
				}
				return err
			}
			if err := e.renewIfDue(ctx, l); err != nil {
				return err
			}
			dir, err := os.MkdirTemp("", "kith-exec-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			sock := filepath.Join(dir, "workload.sock")
			ln, err := net.Listen("unix", sock)
			if err != nil {
				return fmt.Errorf("workload API socket: %w", err)
			}
			if err := os.Chmod(sock, 0o600); err != nil {
				ln.Close()
				return err
			}
			srv := grpc.NewServer()
			workload.RegisterSpiffeWorkloadAPIServer(srv, &userWorkloadAPI{e: e, login: l})
			go srv.Serve(ln) //nolint:errcheck // stopped below
			defer srv.Stop()

			c := exec.CommandContext(ctx, args[0], args[1:]...)
			c.Env = append(os.Environ(), "SPIFFE_ENDPOINT_SOCKET=unix://"+sock)
			c.Stdin, c.Stdout, c.Stderr = os.Stdin, e.stdout, e.stderr
			if err := c.Run(); err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					return &exitError{code: ee.ExitCode()}
				}
				return fmt.Errorf("run %s: %w", args[0], err)
			}
			return nil
		},
	}
}

// userWorkloadAPI is the SPIFFE Workload API serving one user's SVID and bundle. JWT-SVIDs are minted by
// the server for the user's own identity.
type userWorkloadAPI struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	e     *env
	login *savedLogin
}

// checkHeader requires the workload.spiffe.io: true metadata the specification asks clients to send.
func checkHeader(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

func (a *userWorkloadAPI) roots() []byte {
	var out []byte
	for _, c := range a.login.bundle.X509Authorities() {
		out = append(out, c.Raw...)
	}
	return out
}

func (a *userWorkloadAPI) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	if err := checkHeader(stream.Context()); err != nil {
		return err
	}
	s := a.login.svid
	key, err := x509.MarshalPKCS8PrivateKey(s.PrivateKey)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	var chain []byte
	for _, c := range s.Certificates {
		chain = append(chain, c.Raw...)
	}
	if err := stream.Send(&workload.X509SVIDResponse{Svids: []*workload.X509SVID{{
		SpiffeId: s.ID.String(), X509Svid: chain, X509SvidKey: key, Bundle: a.roots()}}}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

func (a *userWorkloadAPI) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	if err := checkHeader(stream.Context()); err != nil {
		return err
	}
	td := a.login.bundle.TrustDomain().IDString()
	if err := stream.Send(&workload.X509BundlesResponse{Bundles: map[string][]byte{td: a.roots()}}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

func (a *userWorkloadAPI) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	if err := checkHeader(ctx); err != nil {
		return nil, err
	}
	id := a.login.svid.ID.String()
	if req.GetSpiffeId() != "" && req.GetSpiffeId() != id {
		return nil, status.Errorf(codes.PermissionDenied, "this Workload API serves %s only", id)
	}
	if len(req.GetAudience()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := call(ctx, a.e, adminv1.AdminServiceClient.MintJWTSVID, &adminv1.MintJWTSVIDRequest{SpiffeId: id, Audience: req.GetAudience()})
	if err != nil {
		return nil, err
	}
	return &workload.JWTSVIDResponse{Svids: []*workload.JWTSVID{{SpiffeId: id, Svid: resp.GetToken()}}}, nil
}
