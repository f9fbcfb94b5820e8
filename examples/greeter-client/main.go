// Command greeter-client is an example workload: it gets its identity from the local Kith agent and
// calls greeter-server over mTLS, accepting only the server SPIFFE ID it is told to.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "server address")
	server := flag.String("server-id", "", "SPIFFE ID the server must present (required)")
	timeout := flag.Duration("timeout", 5*time.Second, "give up after this long")
	flag.Parse()
	serverID, err := spiffeid.FromString(*server)
	if err != nil {
		log.Fatalf("--server-id: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	source, err := workloadapi.NewX509Source(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "greeter-client: no identity from the workload api: %v\n", err)
		os.Exit(1)
	}
	defer source.Close()
	svid, err := source.GetX509SVID()
	if err != nil {
		log.Fatal(err)
	}
	conn, err := spiffetls.DialWithMode(ctx, "tcp", *addr, spiffetls.MTLSClientWithSource(tlsconfig.AuthorizeID(serverID), source))
	if err != nil {
		fmt.Fprintf(os.Stderr, "greeter-client: mTLS dial: %v\n", err)
		os.Exit(1)
	}
	defer conn.Close()
	peer, _ := spiffetls.PeerIDFromConn(conn)
	fmt.Printf("greeter-client: I am %s, mTLS peer is %s\n", svid.ID, peer)
	fmt.Fprintf(conn, "hi from %s\n", svid.ID)
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		log.Fatalf("read reply: %v", err)
	}
	fmt.Printf("greeter-client: server replied %q\n", reply[:len(reply)-1])
}
