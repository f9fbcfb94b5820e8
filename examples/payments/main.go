// Command payments is an example workload for Kith authorization: an HTTPS service that gets its
// identity from the local Kith agent over the SPIFFE Workload API, requires mTLS from any SPIFFE ID in
// the trust domain, and asks the agent's ext_authz socket (authz/middleware) whether each caller may
// make each request.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kithid/kith/authz/middleware"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "listen address (port 0 picks a free one)")
	authzSocket := flag.String("authz-socket", os.Getenv("KITH_AUTHZ_SOCKET"), "the Kith agent's ext_authz socket (env KITH_AUTHZ_SOCKET)")
	flag.Parse()
	if err := run(*addr, *authzSocket); err != nil {
		log.Fatalf("payments: %v", err)
	}
}

func run(addr, authzSocket string) error {
	if authzSocket == "" {
		return errors.New("give --authz-socket or KITH_AUTHZ_SOCKET")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// SPIFFE_ENDPOINT_SOCKET names the agent socket.
	source, err := workloadapi.NewX509Source(ctx)
	if err != nil {
		return fmt.Errorf("get identity from the workload api: %w", err)
	}
	defer source.Close()
	svid, err := source.GetX509SVID()
	if err != nil {
		return fmt.Errorf("get x509-svid: %w", err)
	}

	conn, err := grpc.NewClient("unix://"+authzSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connect to authz socket %s: %w", authzSocket, err)
	}
	defer conn.Close()

	mux := http.NewServeMux()
	mux.HandleFunc("/api/orders", func(w http.ResponseWriter, r *http.Request) {
		caller := "unknown"
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			if id, err := x509svid.IDFromCert(r.TLS.PeerCertificates[0]); err == nil {
				caller = id.String()
			}
		}
		fmt.Fprintf(w, "orders for %s\n", caller)
	})
	srv := &http.Server{
		Handler:           middleware.HTTP(middleware.NewExtAuthzChecker(conn), svid.ID, mux),
		TLSConfig:         tlsconfig.MTLSServerConfig(source, source, tlsconfig.AuthorizeAny()),
		ReadHeaderTimeout: 10 * time.Second,
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	fmt.Printf("payments: I am %s, listening on %s\n", svid.ID, lis.Addr())

	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(lis, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	return nil
}
