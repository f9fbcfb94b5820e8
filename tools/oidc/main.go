// Command oidc-provider runs the example OpenID provider of github.com/zitadel/oidc (example/server: its
// exampleop handlers and in-memory storage, unchanged) for Kith's tests tagged oidc. What this main adds is
// configuration only: the issuer and port, users from a file, the two clients Kith's login uses (a native client
// for authorization code + PKCE with a loopback redirect, and a device-authorization client), and a "groups"
// claim per user in the ID token so that Kith's claim mapping of groups can be tested.
//
// Environment: PORT (required), USERS_FILE (zitadel's users JSON, map of ID to user; default the example's two
// users), GROUPS_FILE (JSON map of user ID to group names, optional), KITH_CLIENT_ID (default kith),
// KITH_DEVICE_CLIENT_ID (default kith-device), KITH_DEVICE_CLIENT_SECRET (default kith-device-secret).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// withGroups adds a "groups" claim to the ID tokens and userinfo of the example storage.
type withGroups struct {
	*storage.Storage
	groups map[string][]string
}

func (s withGroups) SetUserinfoFromRequest(ctx context.Context, info *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, info, req, scopes); err != nil {
		return err
	}
	if g, ok := s.groups[req.GetSubject()]; ok {
		info.AppendClaims("groups", g)
	}
	return nil
}

func (s withGroups) SetUserinfoFromToken(ctx context.Context, info *oidc.UserInfo, tokenID, subject, origin string) error {
	if err := s.Storage.SetUserinfoFromToken(ctx, info, tokenID, subject, origin); err != nil {
		return err
	}
	if g, ok := s.groups[info.Subject]; ok {
		info.AppendClaims("groups", g)
	}
	return nil
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "oidc-provider:", err)
		os.Exit(1)
	}
}

func run() error {
	port := os.Getenv("PORT")
	if port == "" {
		return fmt.Errorf("PORT is not set: set it to the port to listen on (127.0.0.1)")
	}
	issuer := fmt.Sprintf("http://127.0.0.1:%s/", port)
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	storage.RegisterClients(
		// Native: authorization code + PKCE, any loopback port (RFC 8252 section 7.3).
		storage.NativeClient(env("KITH_CLIENT_ID", "kith"), "http://127.0.0.1/callback", "http://localhost/callback"),
		storage.DeviceClient(env("KITH_DEVICE_CLIENT_ID", "kith-device"), env("KITH_DEVICE_CLIENT_SECRET", "kith-device-secret")),
	)
	var users storage.UserStore = storage.NewUserStore(issuer)
	if f := os.Getenv("USERS_FILE"); f != "" {
		var err error
		if users, err = storage.StoreFromFile(f); err != nil {
			return fmt.Errorf("read USERS_FILE %s: %w", f, err)
		}
	}
	groups := map[string][]string{}
	if f := os.Getenv("GROUPS_FILE"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("read GROUPS_FILE: %w", err)
		}
		if err := json.Unmarshal(b, &groups); err != nil {
			return fmt.Errorf("parse GROUPS_FILE %s: %w", f, err)
		}
	}
	router := exampleop.SetupServer(issuer, withGroups{storage.NewStorage(users), groups}, logger, false)
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		return err
	}
	logger.Info("listening", "issuer", issuer)
	return http.Serve(ln, router)
}
