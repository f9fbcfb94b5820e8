package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/spf13/cobra"
	"golang.org/x/oauth2"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

func init() {
	extraCommands = append(extraCommands, (*env).loginCommand, (*env).whoamiCommand, (*env).requestCommand, (*env).requestsCommand,
		(*env).approveCommand, (*env).denyCommand, (*env).execCommand)
}

func (e *env) loginCommand() *cobra.Command {
	var code, fingerprint, bundle, flow string
	cmd := &cobra.Command{
		Use:   "login [--server https://HOST:PORT] (--code ABCD-EFGH | [--flow device|browser]) [--ca-fingerprint sha256:...]",
		Short: "Log in: get your X.509-SVID (spiffe://TD/user/NAME) with an enrolment code or OpenID Connect",
		Long: `Log in to a Kith server's admin TCP listener (admin.listen) and keep your X.509-SVID and key in
$XDG_CONFIG_HOME/kith (files 0600). With --code, the one-time enrolment code kith user add printed;
without, OpenID Connect: the device authorization grant (--flow device, the default: open the URL it
prints on any device) or authorization code + PKCE with a loopback redirect (--flow browser).
The first login to a server needs --ca-fingerprint (printed by kith user add) or --bundle.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			server := e.server
			if server == "" {
				if l, err := e.loadLogin(); err == nil {
					server = l.state.Server
				}
			}
			addr, err := serverAddr(server)
			if err != nil {
				return err
			}
			b, cfg, err := e.trustBundle(ctx, addr, bundle, fingerprint)
			if err != nil {
				return err
			}
			req := &adminv1.LoginRequest{}
			method := "code"
			if code != "" {
				req.Credential = &adminv1.LoginRequest_EnrolmentCode{EnrolmentCode: code}
			} else {
				if cfg.GetOidcIssuer() == "" {
					return errors.New("this server has no OpenID provider configured (users.oidc): log in with --code from kith user add")
				}
				method = "oidc"
				var tok *oauth2.Token
				switch flow {
				case "device":
					tok, err = e.deviceFlow(ctx, cfg)
				case "browser":
					tok, err = e.browserFlow(ctx, cfg)
				default:
					return usage(fmt.Errorf("--flow %q: use device or browser", flow))
				}
				if err != nil {
					return err
				}
				idToken, err := idTokenOf(tok)
				if err != nil {
					return err
				}
				req.Credential = &adminv1.LoginRequest_IdToken{IdToken: idToken}
				req.AccessToken = tok.AccessToken
			}
			key, csr, err := newKey("")
			if err != nil {
				return err
			}
			req.Csr = csr
			var resp *adminv1.LoginResponse
			err = withVerified(addr, b, nil, func(c adminv1.AdminServiceClient) error {
				resp, err = c.Login(ctx, req)
				return err
			})
			if err != nil {
				return err
			}
			l, err := e.completeLogin(addr, b.TrustDomain(), method, key, resp)
			if err != nil {
				return err
			}
			return e.print(resp, func() {
				fmt.Fprintf(e.stdout, "Logged in as %s\nSVID:  %s (until %s; renewed on use until %s)\nSaved: %s\n", resp.GetSpiffeId(),
					resp.GetSpiffeId(), fmtTime(resp.GetExpiresAt()), fmtTime(resp.GetLoginExpiresAt()), l.dir)
			})
		},
	}
	cmd.Flags().StringVar(&code, "code", "", "one-time enrolment code from kith user add")
	cmd.Flags().StringVar(&fingerprint, "ca-fingerprint", "", "sha256:<hex> of the server's CA root (kith user add prints it); needed on the first login")
	cmd.Flags().StringVar(&bundle, "bundle", "", "PEM file of the trust bundle (kith bundle show), instead of --ca-fingerprint")
	cmd.Flags().StringVar(&flow, "flow", "device", "OpenID Connect flow: device (a URL and a code to open anywhere) or browser (loopback redirect on this machine)")
	return cmd
}

// oauthConfig is the OAuth 2.0 client of a flow, from the provider's discovery document.
func oauthConfig(ctx context.Context, cfg *adminv1.GetLoginConfigResponse, device bool) (*oauth2.Config, error) {
	p, err := oidc.NewProvider(ctx, cfg.GetOidcIssuer())
	if err != nil {
		return nil, fmt.Errorf("discover the OpenID provider %s: %w", cfg.GetOidcIssuer(), err)
	}
	c := &oauth2.Config{ClientID: cfg.GetOidcClientId(), Endpoint: p.Endpoint(), Scopes: cfg.GetOidcScopes()}
	if device {
		c.ClientID, c.ClientSecret = cfg.GetOidcDeviceClientId(), cfg.GetOidcDeviceClientSecret()
		if c.ClientSecret != "" {
			// The device token request is sent once per poll: auto-detection would not settle on one style.
			c.Endpoint.AuthStyle = oauth2.AuthStyleInHeader
		}
		if c.Endpoint.DeviceAuthURL == "" {
			return nil, fmt.Errorf("the OpenID provider %s offers no device authorization endpoint: use --flow browser", cfg.GetOidcIssuer())
		}
	}
	return c, nil
}

func idTokenOf(t *oauth2.Token) (string, error) {
	raw, _ := t.Extra("id_token").(string)
	if raw == "" {
		return "", errors.New("the OpenID provider returned no ID token (is the openid scope configured?)")
	}
	return raw, nil
}

// deviceFlow runs the device authorization grant (RFC 8628): it prints where to go and the code to enter,
// and polls the token endpoint until the user approved.
func (e *env) deviceFlow(ctx context.Context, cfg *adminv1.GetLoginConfigResponse) (*oauth2.Token, error) {
	c, err := oauthConfig(ctx, cfg, true)
	if err != nil {
		return nil, err
	}
	da, err := c.DeviceAuth(ctx)
	if err != nil {
		return nil, fmt.Errorf("start the device login: %w", err)
	}
	fmt.Fprintf(e.stderr, "To log in, open %s and enter the code %s\n", da.VerificationURI, da.UserCode)
	if da.VerificationURIComplete != "" {
		fmt.Fprintf(e.stderr, "(or open %s)\n", da.VerificationURIComplete)
	}
	tok, err := c.DeviceAccessToken(ctx, da)
	if err != nil {
		return nil, fmt.Errorf("device login: %w", err)
	}
	return tok, nil
}

// browserFlow runs authorization code + PKCE with a loopback redirect (RFC 8252): it prints the URL to
// open, and waits on 127.0.0.1 for the provider to redirect the browser back.
func (e *env) browserFlow(ctx context.Context, cfg *adminv1.GetLoginConfigResponse) (*oauth2.Token, error) {
	c, err := oauthConfig(ctx, cfg, false)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the login redirect: %w", err)
	}
	defer ln.Close()
	c.RedirectURL = fmt.Sprintf("http://%s/callback", ln.Addr())
	stateBytes := make([]byte, 16)
	if _, err := rand.Read(stateBytes); err != nil {
		return nil, err
	}
	state := hex.EncodeToString(stateBytes)
	verifier := oauth2.GenerateVerifier()
	type result struct {
		code string
		err  error
	}
	done := make(chan result, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		var res result
		switch {
		case q.Get("state") != state:
			res.err = errors.New("the login redirect carried another state: start kith login again")
		case q.Get("error") != "":
			res.err = fmt.Errorf("the OpenID provider refused: %s %s", q.Get("error"), q.Get("error_description"))
		default:
			res.code = q.Get("code")
		}
		if res.err != nil {
			http.Error(w, res.err.Error(), http.StatusBadRequest)
		} else {
			fmt.Fprintln(w, "Logged in to Kith. You may close this window.")
		}
		select {
		case done <- res:
		default:
		}
	})}
	go srv.Serve(ln) //nolint:errcheck // closed below
	defer srv.Close()
	fmt.Fprintf(e.stderr, "To log in, open this URL in your browser:\n%s\n", c.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)))
	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(10 * time.Minute):
		return nil, errors.New("no login within 10 minutes: run kith login again")
	}
	if res.err != nil {
		return nil, res.err
	}
	tok, err := c.Exchange(ctx, res.code, oauth2.VerifierOption(verifier))
	if err != nil {
		return nil, fmt.Errorf("exchange the login code: %w", err)
	}
	return tok, nil
}

func (e *env) whoamiCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show who you are to the server: your user and SPIFFE ID, or your uid on the admin socket",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.WhoAmI, &adminv1.WhoAmIRequest{})
			if err != nil {
				return err
			}
			return e.print(resp, func() {
				if u := resp.GetUser(); u != nil {
					e.printUser(u)
					if l, err := e.loadLogin(); err == nil {
						fmt.Fprintf(e.stdout, "Server:   %s\nSVID:     until %s (login until %s)\n", l.state.Server,
							l.svid.Certificates[0].NotAfter.UTC().Format(time.RFC3339), l.state.LoginExpiresAt.UTC().Format(time.RFC3339))
					}
					return
				}
				fmt.Fprintf(e.stdout, "Actor: %s (the admin socket)\n", resp.GetActor())
			})
		},
	}
}
