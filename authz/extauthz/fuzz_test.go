package extauthz_test

import (
	"context"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/extauthz"
)

// FuzzCheck feeds arbitrary requests to a server whose engine has no grants
// and no custom policy: it must never panic, never allow, and always answer
// with a response that can be sent to Envoy.
func FuzzCheck(f *testing.F) {
	f.Add(frontend.String(), payments.String(), "GET", "/api/v1?x=1", "authorization", "Bearer a.b.c", "x-kith-caller-env", "dev")
	f.Add("", payments.String(), "POST", "/pkg.Service/Method", "Authorization", "bearer", "", "")
	f.Add("spiffe://example.org/../x", "spiffe://EXAMPLE.org/x", "get", "//..//%2e%2e/admin#frag", "x-kith-", "\r\n", "\x00", "\xff")
	f.Add("CN=x", "", "", "", "", "", "", "")
	e, err := authz.New(authz.Config{Logger: discard()})
	if err != nil {
		f.Fatal(err)
	}
	s, err := extauthz.New(extauthz.Config{Decider: e, JWT: bundleValidator{newCA(f)}, Logger: discard(), SampleAllows: 1})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, caller, target, method, path, k1, v1, k2, v2 string) {
		req := request{caller: caller, target: target, method: method, path: path, headers: map[string]string{k1: v1, k2: v2}}.proto()
		req.Attributes.Request.Http.Headers[k1+k2] = v2 + v1
		resp, err := s.Check(context.Background(), req)
		if err != nil {
			t.Fatalf("Check returned an error: %v", err)
		}
		if resp.GetStatus().GetCode() == 0 || resp.GetOkResponse() != nil {
			t.Fatalf("Check allowed %v", req)
		}
		if resp.GetDeniedResponse().GetStatus().GetCode() < 400 {
			t.Fatalf("denial with HTTP status %d", resp.GetDeniedResponse().GetStatus().GetCode())
		}
		if _, err := proto.Marshal(resp); err != nil {
			t.Fatalf("response cannot be sent: %v", err)
		}
		_ = extauthz.Attributes(req.Attributes)
	})
}
