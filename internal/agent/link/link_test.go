package link_test

import (
	"errors"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kithid/kith/internal/agent/link"
)

func TestLinkGivesAClientOnlyWhileUp(t *testing.T) {
	var conns []*grpc.ClientConn
	var dialErr error
	l, err := link.New(link.Config{Dial: func() (*grpc.ClientConn, error) {
		if dialErr != nil {
			return nil, dialErr
		}
		c, err := grpc.NewClient("passthrough:///127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
		conns = append(conns, c)
		return c, err
	}})
	if err != nil {
		t.Fatal(err)
	}
	if l.Client() != nil || len(conns) != 0 {
		t.Fatal("a client before Up")
	}
	l.Up()
	first := l.Client()
	if first == nil || l.Client() != first || len(conns) != 1 {
		t.Fatalf("while up: client %v, %d dials; want one client from one dial", first, len(conns))
	}
	l.Up() // a new session
	if second := l.Client(); second == nil || second == first || len(conns) != 2 {
		t.Errorf("a new session reused the old connection (%d dials)", len(conns))
	}
	if conns[0].GetState() != connectivity.Shutdown {
		t.Error("the old session's connection is still open")
	}
	l.Down()
	if l.Client() != nil {
		t.Error("a client while down")
	}
	if conns[1].GetState() != connectivity.Shutdown {
		t.Error("the connection is still open after Down")
	}
	dialErr = errors.New("bad address")
	l.Up()
	if l.Client() != nil {
		t.Error("a client when dialling failed")
	}
	l.Close()
}
