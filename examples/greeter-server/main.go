// Command greeter-server is an example workload: it gets its identity from the local Kith agent over the
// SPIFFE Workload API (go-spiffe) and serves mTLS, accepting only the client SPIFFE ID it is told to.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "listen address")
	allow := flag.String("allow", "", "SPIFFE ID of the client allowed to connect (required)")
	once := flag.Bool("once", false, "exit after one connection")
	flag.Parse()
	clientID, err := spiffeid.FromString(*allow)
	if err != nil {
		log.Fatalf("--allow: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// SPIFFE_ENDPOINT_SOCKET names the agent socket.
	source, err := workloadapi.NewX509Source(ctx)
	if err != nil {
		log.Fatalf("get identity from the workload api: %v", err)
	}
	defer source.Close()
	svid, err := source.GetX509SVID()
	if err != nil {
		log.Fatal(err)
	}
	lis, err := spiffetls.ListenWithMode(ctx, "tcp", *addr, spiffetls.MTLSServerWithSource(tlsconfig.AuthorizeID(clientID), source))
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	defer lis.Close()
	fmt.Printf("greeter-server: I am %s, listening on %s, accepting %s\n", svid.ID, lis.Addr(), clientID)
	for {
		conn, err := lis.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Printf("accept: %v", err)
			continue
		}
		serve(conn)
		if *once {
			return
		}
	}
}

func serve(conn net.Conn) {
	defer conn.Close()
	peer, err := spiffetls.PeerIDFromConn(conn)
	if err != nil {
		log.Printf("handshake: %v", err)
		return
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		log.Printf("read from %s: %v", peer, err)
		return
	}
	fmt.Printf("greeter-server: mTLS peer is %s, says %q\n", peer, line[:len(line)-1])
	fmt.Fprintf(conn, "hello %s\n", peer)
}
