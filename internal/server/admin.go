package server

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"strconv"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/credentials"

	"github.com/kithid/kith/attestation/peer"
	"github.com/kithid/kith/internal/config"
	"github.com/kithid/kith/internal/server/adminapi"
	"github.com/kithid/kith/internal/server/oidclogin"
	"github.com/kithid/kith/internal/unixsock"
)

// adminCredentials identify admin socket callers by their unix peer credentials for the audit log. Access
// control is the socket's 0600 mode and, whatever the mode, the allow list checked on accept (adminAllow).
func adminCredentials() credentials.TransportCredentials { return peer.TransportCredentials() }

// adminAllow is who may connect to the admin socket: the configured uids and gids, or by default the
// server's own uid and root.
func adminAllow(c config.Admin) unixsock.Allow {
	var a unixsock.Allow
	for _, id := range c.AllowedUIDs {
		a.UIDs = append(a.UIDs, uint32(id))
	}
	for _, id := range c.AllowedGIDs {
		a.GIDs = append(a.GIDs, uint32(id))
	}
	if len(a.UIDs) == 0 && len(a.GIDs) == 0 {
		a.UIDs = []uint32{uint32(os.Geteuid())}
		if os.Geteuid() != 0 {
			a.UIDs = append(a.UIDs, 0)
		}
	}
	return a
}

// adminActor names the admin caller for the audit log: "admin:uid=1000(alice)" on the socket, the user's
// SPIFFE ID over mTLS.
func adminActor(ctx context.Context) string {
	if _, id, ok := adminapi.PeerSVID(ctx); ok {
		return id.String()
	}
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

// newOIDCLogin verifies the ID tokens of the configured OpenID provider (users.oidc).
func newOIDCLogin(_ context.Context, _ spiffeid.TrustDomain, c config.OIDC) (adminapi.OIDCLogin, error) {
	return oidclogin.New(c, nil)
}
