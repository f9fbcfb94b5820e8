package server

import (
	"context"
	"fmt"
	"os/user"
	"strconv"

	"google.golang.org/grpc/credentials"

	"github.com/kithid/kith/attestation/peer"
)

// adminCredentials identify admin socket callers by their unix peer credentials; the socket's 0600 mode is
// the access control.
func adminCredentials() credentials.TransportCredentials { return peer.TransportCredentials() }

// adminActor names the admin caller for the audit log: "admin:uid=1000(alice)".
func adminActor(ctx context.Context) string {
	creds, ok := peer.FromContext(ctx)
	if !ok {
		return "admin"
	}
	name := ""
	if u, err := user.LookupId(strconv.FormatUint(uint64(creds.UID), 10)); err == nil {
		name = "(" + u.Username + ")"
	}
	return fmt.Sprintf("admin:uid=%d%s", creds.UID, name)
}
