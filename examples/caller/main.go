// Command caller is an example workload for Kith authorization: it gets its identity from the local
// Kith agent over the SPIFFE Workload API, makes one mTLS HTTPS request, and prints the answer. A
// refusal (403) is an answer, not a failure: it prints the reason and exits 0.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	url := flag.String("url", "", "URL to call, e.g. https://127.0.0.1:8443/api/orders (required)")
	method := flag.String("method", http.MethodGet, "HTTP method")
	flag.Parse()
	if *url == "" {
		log.Fatal("caller: --url is required")
	}
	if err := run(*url, *method); err != nil {
		log.Fatalf("caller: %v", err)
	}
}

func run(url, method string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()

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

	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: tlsconfig.MTLSClientConfig(source, source, tlsconfig.AuthorizeAny()),
	}}
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	msg := strings.TrimSpace(string(body))
	if reason := resp.Header.Get("X-Kith-Reason"); resp.StatusCode == http.StatusForbidden && reason != "" {
		msg = reason
	}
	fmt.Printf("I am %s: %s %s\n", svid.ID, resp.Status, msg)
	return nil
}
