// Command intruder is an example of a program that nobody registered: it asks the local Kith agent for
// an identity over the SPIFFE Workload API (go-spiffe) once, and reports the agent's answer. Expect
// PermissionDenied: the agent attests every caller and hands out nothing to a program no entry matches.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/status"
)

func main() {
	timeout := flag.Duration("timeout", 5*time.Second, "give up after this long")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	// FetchX509SVID makes one call and returns the agent's error as is (an X509Source would retry).
	svid, err := workloadapi.FetchX509SVID(ctx)
	if err != nil {
		s := status.Convert(err)
		fmt.Printf("intruder: the workload api refused: code=%s message=%q\n", s.Code(), s.Message())
		os.Exit(1)
	}
	fmt.Printf("intruder: got an identity?! %s\n", svid.ID)
}
