package agent

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/internal/agent/policy"
	"github.com/kithid/kith/internal/agent/state"
	"github.com/kithid/kith/internal/config"
)

// restoreOrAttest loads persisted state when the agent SVID in it is still valid, else attests.
func (a *Agent) restoreOrAttest(ctx context.Context) error {
	c := a.cfg.Config
	st, err := state.Load(c.DataDir)
	if err != nil {
		return err
	}
	now := a.cfg.Now()
	if st != nil && len(st.AgentSVID.Chain) > 0 {
		svid, err := st.AgentSVID.Decode()
		switch {
		case err != nil:
			a.log.Warn("persisted agent svid unreadable; attesting again", "error", err)
		case !a.td.IsZero() && svid.ID.TrustDomain() != a.td:
			return fmt.Errorf("agent state in %s belongs to trust domain %s, not %s: use another --data-dir", c.DataDir, svid.ID.TrustDomain(), a.td)
		case !now.Before(svid.Certificates[0].NotAfter):
			a.log.Warn("persisted agent svid expired; attesting again", "expired", svid.Certificates[0].NotAfter)
		default:
			a.td = svid.ID.TrustDomain()
			a.svid.Set(svid)
			n, err := st.Restore(a.td, a.cache, now)
			if err != nil {
				return err
			}
			a.policy.Restore(ctx, policy.Saved{Authz: st.Authz, Policy: st.Policy, Revision: st.PolicyRevision, Key: st.PolicyKey})
			a.log.Info("restored agent state", "spiffe_id", svid.ID.String(), "entries", st.Entries(), "svids", n, "revision", st.Revision)
			return nil
		}
	}
	if !a.canAttest() {
		return errors.New("agent has no valid svid and no join token: create one with `kith token create` and pass --join-token (in a Kubernetes pod, set node_attestor: k8s_psat instead)")
	}
	if err := a.bootstrapBundle(ctx); err != nil {
		return err
	}
	if err := a.attest(ctx); err != nil {
		return err
	}
	return a.save()
}

// bootstrapBundle loads the trust bundle used to authenticate the server on first contact.
func (a *Agent) bootstrapBundle(ctx context.Context) error {
	c := a.cfg.Config
	switch {
	case c.TrustBundle != "":
		data, err := os.ReadFile(c.TrustBundle)
		if err != nil {
			return fmt.Errorf("read trust bundle (trust_bundle): %w", err)
		}
		roots, err := parseRootsPEM(data)
		if err != nil {
			return fmt.Errorf("trust bundle %s: %w (get it with `kith bundle show`)", c.TrustBundle, err)
		}
		if err := a.settleTrustDomain(roots, c.TrustBundle); err != nil {
			return err
		}
		a.cache.SetBundle(spiffebundle.FromX509Authorities(a.td, roots))
	case c.TrustBundleURL != "":
		if !c.InsecureBootstrap {
			return errors.New("--trust-bundle-url fetches the bundle without authenticating the server: add --insecure-bootstrap to accept that, or use --trust-bundle FILE")
		}
		a.log.Warn("insecure bootstrap: trusting the bundle fetched from the server without verifying it", "url", c.TrustBundleURL)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.TrustBundleURL, nil)
		if err != nil {
			return fmt.Errorf("trust bundle url: %w", err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("fetch trust bundle: %w", err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil || resp.StatusCode != http.StatusOK {
			return fmt.Errorf("fetch trust bundle from %s: status %s %v", c.TrustBundleURL, resp.Status, err)
		}
		// The document does not name its trust domain: read the authorities first, then label them.
		b, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString("bootstrap.invalid"), body)
		if err != nil {
			return fmt.Errorf("trust bundle from %s: %w", c.TrustBundleURL, err)
		}
		if err := a.settleTrustDomain(b.X509Authorities(), c.TrustBundleURL); err != nil {
			return err
		}
		if b, err = spiffebundle.Parse(a.td, body); err != nil {
			return fmt.Errorf("trust bundle from %s: %w", c.TrustBundleURL, err)
		}
		a.cache.SetBundle(b)
	default:
		return errors.New("first start needs the server's trust bundle: pass --trust-bundle FILE (from `kith bundle show`) or --trust-bundle-url URL --insecure-bootstrap")
	}
	return nil
}

// settleTrustDomain checks the bootstrap roots (from source) against the configured trust domain, or takes
// the trust domain from them when none is configured. Kith's CA roots carry their trust domain as a
// spiffe:// URI SAN; roots from an upstream CA may name none, and then the configured (or default) one
// stands.
func (a *Agent) settleTrustDomain(roots []*x509.Certificate, source string) error {
	named, err := rootsTrustDomain(roots)
	if err != nil {
		return fmt.Errorf("trust bundle %s: %w", source, err)
	}
	switch {
	case a.td.IsZero() && named.IsZero():
		a.td = spiffeid.RequireTrustDomainFromString(config.DefaultTrustDomain)
		a.log.Info("trust domain not configured and not named by the trust bundle; using the default", "trust_domain", a.td.Name())
	case a.td.IsZero():
		a.td = named
		a.log.Info("trust domain taken from the trust bundle", "trust_domain", a.td.Name())
	case !named.IsZero() && named != a.td:
		return fmt.Errorf("trust bundle %s is for trust domain %s, but the agent is configured for %s: set --trust-domain %s (or trust_domain in the config), or use the bundle of the %s server",
			source, named.Name(), a.td.Name(), named.Name(), a.td.Name())
	}
	return nil
}

// parseRootsPEM reads the certificates of a PEM file.
func parseRootsPEM(data []byte) ([]*x509.Certificate, error) {
	var roots []*x509.Certificate
	rest := bytes.TrimSpace(data)
	for len(rest) > 0 {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		roots = append(roots, c)
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("no PEM certificates found")
	}
	return roots, nil
}

// rootsTrustDomain is the trust domain the roots name in their spiffe:// URI SANs; zero when none does. Roots
// naming different trust domains are an error.
func rootsTrustDomain(roots []*x509.Certificate) (spiffeid.TrustDomain, error) {
	var td spiffeid.TrustDomain
	for _, c := range roots {
		for _, u := range c.URIs {
			if u.Scheme != "spiffe" {
				continue
			}
			t, err := spiffeid.TrustDomainFromURI(u)
			if err != nil {
				continue // not a SPIFFE ID; it names nothing
			}
			if !td.IsZero() && t != td {
				return spiffeid.TrustDomain{}, fmt.Errorf("roots name two trust domains, %s and %s: give one server's roots", td.Name(), t.Name())
			}
			td = t
		}
	}
	return td, nil
}
