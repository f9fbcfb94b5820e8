package adminapi

import (
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/node"
	"github.com/kithid/kith/internal/server/apierr"
	"github.com/kithid/kith/internal/store"
	"github.com/kithid/kith/logclip"
)

// ReservedPath is the path prefix of Kith's own identities (agents, server); entries and minted SVIDs
// may not use it, so no workload can impersonate an agent. It is [node.ReservedPath].
const ReservedPath = node.ReservedPath

// Limits on what one entry may hold, checked at the API edge so that no request can store (and push to
// every agent) an unbounded value.
const (
	MaxIDLength  = 2048 // bytes of a SPIFFE ID, as the SPIFFE specification bounds a URI SAN
	MaxSelectors = 64   // workload selectors, and node selectors, per entry
	MaxDNSNames  = 64   // DNS SANs per entry or minted SVID
	MaxLabels    = 64   // labels per entry
)

// ParseWorkloadID parses a SPIFFE ID given by an administrator for a workload or person: it must be in
// the trust domain td, have a path, and not use the reserved /kith/ path.
func ParseWorkloadID(td spiffeid.TrustDomain, field, s string) (spiffeid.ID, error) {
	id, err := ParseID(td, field, s)
	if err != nil {
		return spiffeid.ID{}, err
	}
	if id.Path() == "" {
		return spiffeid.ID{}, apierr.Invalid(fmt.Sprintf("%s %q has no path: give a workload path such as spiffe://%s/ns/prod/sa/web", field, s, td))
	}
	if strings.HasPrefix(id.Path()+"/", ReservedPath) {
		return spiffeid.ID{}, apierr.Invalid(fmt.Sprintf("%s %q is under the reserved path %s used for Kith's own agents and servers: choose another path", field, s, ReservedPath))
	}
	return id, nil
}

// ParseID parses a SPIFFE ID in the trust domain td.
func ParseID(td spiffeid.TrustDomain, field, s string) (spiffeid.ID, error) {
	if s == "" {
		return spiffeid.ID{}, apierr.Invalid(fmt.Sprintf("%s is required: give a SPIFFE ID such as spiffe://%s/app", field, td))
	}
	if len(s) > MaxIDLength {
		return spiffeid.ID{}, apierr.Invalid(fmt.Sprintf("%s is %d bytes: a SPIFFE ID has at most %d", field, len(s), MaxIDLength))
	}
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, apierr.Invalid(fmt.Sprintf("%s %q is not a valid SPIFFE ID: %v", field, s, err))
	}
	if id.TrustDomain() != td {
		return spiffeid.ID{}, apierr.Invalid(fmt.Sprintf("%s %q is in trust domain %q but this server's trust domain is %q", field, s, id.TrustDomain(), td))
	}
	return id, nil
}

var (
	dnsLabel = regexp.MustCompile(`^(\*|[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)$`)
	labelKey = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9._/-]{0,62}[a-zA-Z0-9])?$`)
)

// ValidateDNSNames checks DNS SANs: lowercase hostnames, an optional leading wildcard label, no IPs.
func ValidateDNSNames(names []string) error {
	if len(names) > MaxDNSNames {
		return apierr.Invalid(fmt.Sprintf("dns_names: %d given, at most %d", len(names), MaxDNSNames))
	}
	for _, n := range names {
		if n == "" || len(n) > 253 || net.ParseIP(n) != nil {
			return apierr.Invalid(fmt.Sprintf("dns name %q is not a valid hostname", n))
		}
		for i, l := range strings.Split(n, ".") {
			if !dnsLabel.MatchString(l) || (l == "*" && i != 0) {
				return apierr.Invalid(fmt.Sprintf("dns name %q is not a valid hostname (lowercase letters, digits, '-', optional leading '*.')", n))
			}
		}
	}
	return nil
}

func validateLabels(labels map[string]string) error {
	for k, v := range labels {
		if !labelKey.MatchString(k) {
			return apierr.Invalid(fmt.Sprintf("label key %q is invalid: use letters, digits, '.', '_', '-', '/' (at most 64)", k))
		}
		if len(v) > 256 || strings.ContainsAny(v, "\x00\n") {
			return apierr.Invalid(fmt.Sprintf("label %s has an invalid value (at most 256 characters, no newlines)", k))
		}
	}
	return nil
}

// TTLBounds are the lifetimes a request may ask for.
type TTLBounds struct {
	Min, Max time.Duration
}

func (b TTLBounds) check(field string, seconds int64) (time.Duration, error) {
	if seconds == 0 {
		return 0, nil
	}
	d := time.Duration(seconds) * time.Second
	if seconds < 0 || d < b.Min || d > b.Max {
		return 0, apierr.Invalid(fmt.Sprintf("%s %s is outside the allowed range %s to %s", field, d, b.Min, b.Max))
	}
	return d, nil
}

// entryFromProto validates an entry from the API.
func (s *Service) entryFromProto(pe *adminv1.Entry) (store.Entry, error) {
	if pe == nil {
		return store.Entry{}, apierr.Invalid("entry is required")
	}
	td := s.cfg.TrustDomain
	id, err := ParseWorkloadID(td, "spiffe_id", pe.GetSpiffeId())
	if err != nil {
		return store.Entry{}, err
	}
	for _, c := range []struct {
		field  string
		n, max int
	}{
		{"selectors", len(pe.GetSelectors()), MaxSelectors},
		{"node_selectors", len(pe.GetNodeSelectors()), MaxSelectors},
		{"dns_names", len(pe.GetDnsNames()), MaxDNSNames},
		{"labels", len(pe.GetLabels()), MaxLabels},
	} {
		if c.n > c.max {
			return store.Entry{}, apierr.Invalid(fmt.Sprintf("%s: %d given, at most %d per entry", c.field, c.n, c.max))
		}
	}
	e := store.Entry{ID: pe.GetId(), SPIFFEID: id, DNSNames: pe.GetDnsNames(), Labels: pe.GetLabels()}
	if pe.GetParentId() != "" {
		if e.ParentID, err = ParseID(td, "parent_id", pe.GetParentId()); err != nil {
			return store.Entry{}, err
		}
	}
	if e.NodeSelectors, err = attestation.ParseSelectors(pe.GetNodeSelectors()); err != nil {
		return store.Entry{}, apierr.Invalid("node selector " + err.Error())
	}
	if e.Selectors, err = attestation.ParseSelectors(pe.GetSelectors()); err != nil {
		return store.Entry{}, apierr.Invalid(err.Error())
	}
	if e.ParentID.IsZero() && len(e.NodeSelectors) == 0 {
		if s.cfg.DefaultParent.IsZero() {
			return store.Entry{}, apierr.Invalid("entry needs --parent (an agent's SPIFFE ID) or --node-selector (e.g. join_token:name:node1) to say which agents serve it")
		}
		e.ParentID = s.cfg.DefaultParent
	}
	if !e.ParentID.IsZero() && len(e.NodeSelectors) > 0 {
		return store.Entry{}, apierr.Invalid("give either --parent or --node-selector, not both")
	}
	if len(e.Selectors) == 0 {
		return store.Entry{}, apierr.Invalid("entry needs at least one --selector (e.g. unix:uid:1000) so only the attested workload receives it")
	}
	if e.ParentID == id {
		return store.Entry{}, apierr.Invalid("an entry cannot be its own parent")
	}
	if e.X509TTL, err = s.cfg.X509TTL.check("x509 ttl", pe.GetX509TtlSeconds()); err != nil {
		return store.Entry{}, err
	}
	if e.JWTTTL, err = s.cfg.JWTTTL.check("jwt ttl", pe.GetJwtTtlSeconds()); err != nil {
		return store.Entry{}, err
	}
	if err := ValidateDNSNames(e.DNSNames); err != nil {
		return store.Entry{}, err
	}
	if err := validateLabels(e.Labels); err != nil {
		return store.Entry{}, err
	}
	if e.FederatesWith, err = parseFederatesWith(td, pe.GetFederatesWith()); err != nil {
		return store.Entry{}, err
	}
	return e, nil
}

// MaxFederatesWith bounds the trust domains one entry federates with.
const MaxFederatesWith = 32

// parseFederatesWith parses an entry's federates_with: trust domain names (a spiffe:// prefix is allowed),
// none of them the server's own, without repeats.
func parseFederatesWith(own spiffeid.TrustDomain, names []string) ([]spiffeid.TrustDomain, error) {
	if len(names) > MaxFederatesWith {
		return nil, apierr.Invalid(fmt.Sprintf("federates_with: %d given, at most %d per entry", len(names), MaxFederatesWith))
	}
	var out []spiffeid.TrustDomain
	seen := map[spiffeid.TrustDomain]bool{}
	for _, n := range names {
		td, err := ParseTrustDomain("federates_with", n)
		if err != nil {
			return nil, err
		}
		if td == own {
			return nil, apierr.Invalid(fmt.Sprintf("federates_with %q is this server's own trust domain: its workloads get that bundle anyway; give other trust domains", n))
		}
		if !seen[td] {
			seen[td] = true
			out = append(out, td)
		}
	}
	return out, nil
}

// ParseTrustDomain parses a trust domain name given by an administrator ("partner.org" or
// "spiffe://partner.org").
func ParseTrustDomain(field, s string) (spiffeid.TrustDomain, error) {
	if s == "" {
		return spiffeid.TrustDomain{}, apierr.Invalid(fmt.Sprintf("%s is required: give a trust domain such as partner.org", field))
	}
	if len(s) > 255 {
		return spiffeid.TrustDomain{}, apierr.Invalid(fmt.Sprintf("%s is %d bytes: a trust domain name has at most 255", field, len(s)))
	}
	td, err := spiffeid.TrustDomainFromString(s)
	if err != nil {
		return spiffeid.TrustDomain{}, apierr.Invalid(fmt.Sprintf("%s %q is not a trust domain name: %v (give a name such as partner.org)", field, logclip.Cut(s, 100), err))
	}
	return td, nil
}

func entryToProto(e store.Entry) *adminv1.Entry {
	pe := &adminv1.Entry{
		Id:             e.ID,
		SpiffeId:       e.SPIFFEID.String(),
		NodeSelectors:  attestation.Strings(e.NodeSelectors),
		Selectors:      attestation.Strings(e.Selectors),
		X509TtlSeconds: int64(e.X509TTL / time.Second),
		JwtTtlSeconds:  int64(e.JWTTTL / time.Second),
		DnsNames:       e.DNSNames,
		Labels:         e.Labels,
		CreatedAt:      ts(e.CreatedAt),
		UpdatedAt:      ts(e.UpdatedAt),
		Revision:       e.Revision,
		Source:         e.Source,
	}
	for _, td := range e.FederatesWith {
		pe.FederatesWith = append(pe.FederatesWith, td.Name())
	}
	if !e.ParentID.IsZero() {
		pe.ParentId = e.ParentID.String()
	}
	return pe
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
