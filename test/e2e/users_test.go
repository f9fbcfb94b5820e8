//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/encoding/protojson"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

func init() {
	// KITH_E2E_PRINT_SVID: fetch this process's X.509-SVID from SPIFFE_ENDPOINT_SOCKET with go-spiffe's
	// client, as any SPIFFE-aware program run by kith exec does, and print its ID.
	helperModes["KITH_E2E_PRINT_SVID"] = func(string) int {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := workloadapi.FetchX509SVID(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, "fetch x509-svid:", err)
			return 1
		}
		fmt.Println(s.ID.String())
		return 0
	}
}

// usersCluster is a server with its admin TCP listener on, an agent serving payments (owned by team
// payments), and the users scott (team payments) and eve, each logged in with their enrolment code.
type usersCluster struct {
	*cluster
	adminAddr      string
	payments       spiffeid.ID
	authz          string
	scott, eve     string // config dirs
	scottID, eveID spiffeid.ID
}

func newUsersCluster(t *testing.T) *usersCluster {
	t.Helper()
	adminAddr := freeAddr(t)
	c := &usersCluster{cluster: newClusterWith(t, []string{"KITH_ADMIN_LISTEN=" + adminAddr}), adminAddr: adminAddr}
	c.startAgent("node1", c.joinToken("node1"))
	c.authz = c.authzSocket("node1")
	c.payments = spiffeid.RequireFromPath(c.td, "/payments")
	mustKith(t, c.adminSocket, "entry", "create", "--spiffe-id", c.payments.String(), "--parent", "spiffe://e2e.test/kith/agent/join_token/node1",
		"--selector", uidSelector(), "--label", "owner-team=payments")
	c.scottID, c.eveID = spiffeid.RequireFromPath(c.td, "/user/scott"), spiffeid.RequireFromPath(c.td, "/user/eve")
	c.scott, c.eve = filepath.Join(c.dir, "scott-config"), filepath.Join(c.dir, "eve-config")
	c.login(t, "scott", c.scott, "--label", "team=payments")
	c.login(t, "eve", c.eve)
	return c
}

// login adds the user on the admin socket and logs in with the printed enrolment code.
func (c *usersCluster) login(t *testing.T, name, configDir string, addArgs ...string) {
	t.Helper()
	var added adminv1.CreateUserResponse
	kithProto(t, c.adminSocket, &added, append([]string{"user", "add", name}, addArgs...)...)
	if added.GetEnrolmentCode() == "" || !strings.HasPrefix(added.GetCaFingerprint(), "sha256:") || added.GetLoginUrl() != "https://"+c.adminAddr {
		t.Fatalf("kith user add printed code %q fingerprint %q url %q", added.GetEnrolmentCode(), added.GetCaFingerprint(), added.GetLoginUrl())
	}
	mustKithUser(t, configDir, nil, "login", "--server", added.GetLoginUrl(), "--ca-fingerprint", added.GetCaFingerprint(), "--code", added.GetEnrolmentCode())
}

func (c *usersCluster) allowed(t *testing.T, caller spiffeid.ID) bool {
	t.Helper()
	ok, err := authzAllowed(c.authz, caller, c.payments, "GET", "/balance")
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func TestUsersLoginWithEnrolmentCode(t *testing.T) {
	c := newUsersCluster(t)

	t.Run("the login files are 0600 in a 0700 directory", func(t *testing.T) {
		dir := filepath.Join(c.scott, "kith")
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("%s is %#o, want 0700", dir, fi.Mode().Perm())
		}
		for _, f := range []string{"login.json", "svid.pem", "svid.key", "bundle.pem"} {
			fi, err := os.Stat(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s is %#o, want 0600", f, fi.Mode().Perm())
			}
		}
		s, err := x509svid.Load(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid.key"))
		if err != nil {
			t.Fatal(err)
		}
		if s.ID != c.scottID {
			t.Errorf("saved SVID is %s, want %s", s.ID, c.scottID)
		}
		if life := s.Certificates[0].NotAfter.Sub(s.Certificates[0].NotBefore); life < 7*time.Hour || life > 9*time.Hour {
			t.Errorf("SVID lasts %s, want the default 8h", life)
		}
	})
	t.Run("an enrolment code is used once", func(t *testing.T) {
		var added adminv1.CreateUserResponse
		kithProto(t, c.adminSocket, &added, "user", "add", "ann")
		dir := filepath.Join(c.dir, "ann-config")
		mustKithUser(t, dir, nil, "login", "--server", added.GetLoginUrl(), "--ca-fingerprint", added.GetCaFingerprint(), "--code", added.GetEnrolmentCode())
		r := kithUser(t, filepath.Join(c.dir, "thief-config"), nil, "login", "--server", added.GetLoginUrl(), "--ca-fingerprint", added.GetCaFingerprint(), "--code", added.GetEnrolmentCode())
		if r.code == 0 || !strings.Contains(r.stderr, "already used") {
			t.Errorf("second use of a code: exit %d, stderr %q; want refused as unknown, already used or expired", r.code, r.stderr)
		}
		var audit adminv1.ListAuditEventsResponse
		kithProto(t, c.adminSocket, &audit, "audit", "list")
		var actions []string
		for _, ev := range audit.GetEvents() {
			if ev.GetActor() == "spiffe://e2e.test/user/ann" || ev.GetAction() == "user.login.refused" {
				actions = append(actions, ev.GetAction())
			}
		}
		if !slices.Contains(actions, "user.login") || !slices.Contains(actions, "user.login.refused") {
			t.Errorf("audit rows of ann's login and of the second use: %v, want user.login and user.login.refused", actions)
		}
	})
	t.Run("a wrong fingerprint is refused before anything is sent", func(t *testing.T) {
		r := kithUser(t, filepath.Join(c.dir, "x-config"), nil, "login", "--server", "https://"+c.adminAddr, "--ca-fingerprint", "sha256:00", "--code", "ABCD-EFGH")
		if r.code == 0 || !strings.Contains(r.stderr, "fingerprint") {
			t.Errorf("exit %d stderr %q, want a refusal naming the fingerprint", r.code, r.stderr)
		}
	})
	t.Run("whoami names the user", func(t *testing.T) {
		out := mustKithUser(t, c.scott, nil, "whoami")
		if !strings.Contains(out, c.scottID.String()) || !strings.Contains(out, "team=payments") {
			t.Errorf("whoami:\n%s", out)
		}
	})
	t.Run("kith token jwt mints a JWT-SVID of the user", func(t *testing.T) {
		tok := strings.TrimSpace(mustKithUser(t, c.scott, nil, "token", "jwt", "--audience", "payments"))
		s, err := jwtsvid.ParseInsecure(tok, []string{"payments"})
		if err != nil {
			t.Fatal(err)
		}
		if s.ID != c.scottID {
			t.Errorf("JWT-SVID of %s, want %s", s.ID, c.scottID)
		}
		r := kithUser(t, c.eve, nil, "svid", "mint", "--spiffe-id", c.scottID.String())
		if r.code == 0 {
			t.Errorf("eve minted an X.509-SVID of scott")
		}
	})
	t.Run("kith exec serves the user's SVID to a go-spiffe program", func(t *testing.T) {
		out := mustKithUser(t, c.scott, []string{"KITH_E2E_PRINT_SVID=1"}, "exec", "--", os.Args[0], "-test.run=^$")
		if strings.TrimSpace(out) != c.scottID.String() {
			t.Errorf("the program under kith exec got %q, want %s", out, c.scottID)
		}
	})
}

func TestUsersOwnersGrantAndRequestsAndDisable(t *testing.T) {
	c := newUsersCluster(t)

	t.Run("a user's call is denied until a grant", func(t *testing.T) {
		if c.allowed(t, c.scottID) {
			t.Fatal("scott may call payments without a grant")
		}
	})
	t.Run("a non-owner may not grant, and is told why", func(t *testing.T) {
		r := kithUser(t, c.eve, nil, "grant", c.eveID.String(), c.payments.String())
		if r.code == 0 || !strings.Contains(r.stderr, "eve is not an owner of spiffe://e2e.test/payments (its entries are labelled owner-team=payments)") {
			t.Errorf("eve's grant: exit %d, stderr %q", r.code, r.stderr)
		}
	})
	t.Run("an owner grants a caller to their target and the agent allows it", func(t *testing.T) {
		mustKithUser(t, c.scott, nil, "grant", c.scottID.String(), c.payments.String(), "--for", "1h")
		eventually(t, 10*time.Second, "scott allowed after the grant", func() error {
			if !c.allowed(t, c.scottID) {
				return fmt.Errorf("still denied")
			}
			return nil
		})
		var audit adminv1.ListAuditEventsResponse
		kithProto(t, c.adminSocket, &audit, "audit", "list")
		found := false
		for _, ev := range audit.GetEvents() {
			found = found || ev.GetAction() == "grant.create" && ev.GetActor() == c.scottID.String()
		}
		if !found {
			t.Errorf("no grant.create audit row is attributed to %s", c.scottID)
		}
	})
	t.Run("a request approved by the owner works for its duration and then stops", func(t *testing.T) {
		var created adminv1.CreateAccessRequestResponse
		out := mustKithUser(t, c.eve, nil, "request", "payments", "--for", "15s", "--reason", "incident 4411", "-o", "json")
		if err := protojson.Unmarshal([]byte(out), &created); err != nil {
			t.Fatal(err)
		}
		id := created.GetRequest().GetId()
		if created.GetRequest().GetState() != "pending" {
			t.Fatalf("request state %s, want pending", created.GetRequest().GetState())
		}
		if list := mustKithUser(t, c.scott, nil, "requests", "list"); !strings.Contains(list, id) {
			t.Errorf("the owner does not see the request:\n%s", list)
		}
		if r := kithUser(t, c.eve, nil, "approve", id); r.code == 0 {
			t.Errorf("eve approved her own request to a target she does not own")
		}
		mustKithUser(t, c.scott, nil, "approve", id)
		eventually(t, 10*time.Second, "eve allowed after the approval", func() error {
			if !c.allowed(t, c.eveID) {
				return fmt.Errorf("still denied")
			}
			return nil
		})
		eventually(t, 30*time.Second, "eve denied once the approved grant expired", func() error {
			if c.allowed(t, c.eveID) {
				return fmt.Errorf("still allowed")
			}
			return nil
		})
	})
	t.Run("disabling a user denies their calls within the push time, and their stolen SVID is refused", func(t *testing.T) {
		mustKith(t, c.adminSocket, "grant", c.eveID.String(), c.payments.String())
		eventually(t, 10*time.Second, "eve allowed", func() error {
			if !c.allowed(t, c.eveID) {
				return fmt.Errorf("still denied")
			}
			return nil
		})
		start := time.Now()
		mustKith(t, c.adminSocket, "user", "disable", "eve")
		eventually(t, 5*time.Second, "eve denied after disable", func() error {
			if c.allowed(t, c.eveID) {
				return fmt.Errorf("still allowed")
			}
			return nil
		})
		t.Logf("disable → denied by the agent in %s", time.Since(start).Round(time.Millisecond))
		r := kithUser(t, c.eve, nil, "whoami")
		if r.code == 0 || !strings.Contains(r.stderr, "user eve is disabled") {
			t.Errorf("eve's whoami after disable: exit %d stderr %q", r.code, r.stderr)
		}
		// The stolen files, used directly: the TLS handshake succeeds (the certificate is valid), the call is refused.
		dir := filepath.Join(c.eve, "kith")
		s, err := x509svid.Load(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid.key"))
		if err != nil {
			t.Fatal(err)
		}
		b := serverBundle(t, c.adminSocket, c.td)
		conn, err := grpc.NewClient("passthrough:///"+c.adminAddr, grpc.WithTransportCredentials(credentials.NewTLS(
			tlsconfig.MTLSClientConfig(s, b, tlsconfig.AuthorizeID(spiffeid.RequireFromPath(c.td, "/kith/server"))))))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for name, call := range map[string]func() error{
			"renew": func() error {
				_, err := adminv1.NewAdminServiceClient(conn).RenewLogin(ctx, &adminv1.RenewLoginRequest{LoginId: "x", Csr: []byte{1}})
				return err
			},
			"list entries": func() error {
				_, err := adminv1.NewAdminServiceClient(conn).ListEntries(ctx, &adminv1.ListEntriesRequest{})
				return err
			},
		} {
			if err := call(); err == nil || !strings.Contains(err.Error(), "disabled") {
				t.Errorf("%s with eve's stolen SVID: %v, want refused as disabled", name, err)
			}
		}
		mustKith(t, c.adminSocket, "user", "enable", "eve")
		eventually(t, 5*time.Second, "eve allowed again after enable", func() error {
			if !c.allowed(t, c.eveID) {
				return fmt.Errorf("still denied")
			}
			return nil
		})
	})
	t.Run("the admin listener refuses callers without a user SVID", func(t *testing.T) {
		conn, err := grpc.NewClient("passthrough:///"+c.adminAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = adminv1.NewAdminServiceClient(conn).ListUsers(ctx, &adminv1.ListUsersRequest{})
		if err == nil || !strings.Contains(err.Error(), "log in first") {
			t.Errorf("ListUsers without a certificate: %v", err)
		}
	})
}
