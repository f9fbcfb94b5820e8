package agent

import (
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/kithid/kith/authz/extauthz"
)

var _ extauthz.JWTValidator = (*Agent)(nil)

// ValidateJWTSVID validates a bearer JWT-SVID for an audience against the agent's bundle.
func (a *Agent) ValidateJWTSVID(token, audience string) (spiffeid.ID, error) {
	b := a.cache.Bundle()
	if b == nil {
		return spiffeid.ID{}, fmt.Errorf("agent has no bundle yet")
	}
	svid, err := jwtsvid.ParseAndValidate(token, jwtbundle.NewSet(b.JWTBundle()), []string{audience})
	if err != nil {
		return spiffeid.ID{}, err
	}
	return svid.ID, nil
}
