package policy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"log/slog"
	"strings"
	"testing"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/authz"
	"github.com/kithid/kith/authz/authztest"
	"github.com/kithid/kith/authz/policybundle"
)

func TestAgentVerifiesPolicyBundles(t *testing.T) {
	ctx := context.Background()
	e, err := authz.New(authz.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Engine: e})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := policybundle.MarshalPublicKey(&key.PublicKey)
	good, err := policybundle.BuildSigned("rev1", map[string]string{"x.rego": "package kith.ext\n\ndeny contains \"d\" if input.kith.method == \"DELETE\"\n"}, key)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("a signed bundle is activated and its key pinned", func(t *testing.T) {
		if err := a.ApplyPolicy(ctx, &agentv1.PolicyBundle{Revision: "rev1", Bundle: good, PublicKey: pub}); err != nil {
			t.Fatal(err)
		}
		if e.Revision() != "rev1" || !bytes.Equal(a.policyKey, pub) {
			t.Errorf("revision %s", e.Revision())
		}
	})
	t.Run("a tampered bundle is refused and the old one stays", func(t *testing.T) {
		b2, _ := policybundle.BuildSigned("rev2", map[string]string{"x.rego": "package kith.ext\n\ndeny contains \"d\" if input.kith.method == \"DELETE\"\n"}, key)
		bad := authztest.TamperBundle(t, b2, "DELETE", "GET")
		if err := a.ApplyPolicy(ctx, &agentv1.PolicyBundle{Revision: "rev2", Bundle: bad, PublicKey: pub}); err == nil {
			t.Fatal("tampered bundle accepted")
		}
		if e.Revision() != "rev1" || a.Revision() != "rev1" {
			t.Errorf("revision %s", e.Revision())
		}
	})
	t.Run("a bundle with another key is refused", func(t *testing.T) {
		other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		otherPub, _ := policybundle.MarshalPublicKey(&other.PublicKey)
		b3, _ := policybundle.BuildSigned("rev3", map[string]string{}, other)
		if err := a.ApplyPolicy(ctx, &agentv1.PolicyBundle{Revision: "rev3", Bundle: b3, PublicKey: otherPub}); err == nil || !strings.Contains(err.Error(), "pinned") {
			t.Errorf("error %v", err)
		}
		if err := a.ApplyPolicy(ctx, &agentv1.PolicyBundle{Revision: "rev3", Bundle: b3}); err == nil {
			t.Error("bundle signed by another key accepted without a key in the message")
		}
		if e.Revision() != "rev1" {
			t.Errorf("revision %s", e.Revision())
		}
	})
	t.Run("an unsigned bundle is refused once a key is pinned", func(t *testing.T) {
		u, _ := policybundle.Build("rev4", map[string]string{})
		if err := a.ApplyPolicy(ctx, &agentv1.PolicyBundle{Revision: "rev4", Bundle: u}); err == nil {
			t.Error("unsigned bundle accepted")
		}
	})
}
