package sds

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/kithid/kith/svid/cache"
)

// SecretType is the xDS type URL of the secrets this package serves.
const SecretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// Resource names understood besides SPIFFE IDs and trust domain IDs.
const (
	NameDefault = "default" // the caller's first identity (Istio)
	NameRootCA  = "ROOTCA"  // the own trust domain's bundle (Istio)
	NameAll     = "ALL"     // every bundle (SPIRE)
)

// Node metadata keys that choose the validation context form.
const (
	// MetadataValidation set to "trusted_ca" asks for plain trusted_ca validation contexts; "spiffe" (the
	// default) for Envoy's SPIFFE certificate validator.
	MetadataValidation = "kith.io/validation"
	// MetadataDisableSPIFFE is SPIRE's key: true asks for trusted_ca validation contexts.
	MetadataDisableSPIFFE = "disable_spiffe_cert_validation"
)

// spiffeValidatorName is the extension name of Envoy's SPIFFE certificate validator.
const spiffeValidatorName = "envoy.tls.cert_validator.spiffe"

// form is how validation contexts are expressed.
type form uint8

const (
	formSPIFFE    form = iota // custom_validator_config with SPIFFECertValidatorConfig
	formTrustedCA             // trusted_ca with the PEM roots
)

// formFor reads the validation form from a proxy's node metadata.
func formFor(node *corev3.Node) form {
	md := node.GetMetadata().GetFields()
	if v, ok := md[MetadataValidation]; ok {
		if s, ok := v.GetKind().(*structpb.Value_StringValue); ok && strings.EqualFold(s.StringValue, "trusted_ca") {
			return formTrustedCA
		}
	}
	if v, ok := md[MetadataDisableSPIFFE]; ok {
		switch k := v.GetKind().(type) {
		case *structpb.Value_BoolValue:
			if k.BoolValue {
				return formTrustedCA
			}
		case *structpb.Value_StringValue:
			if strings.EqualFold(k.StringValue, "true") {
				return formTrustedCA
			}
		}
	}
	return formSPIFFE
}

// errUnknownName reports a requested name that the caller may not have or that does not exist.
var errUnknownName = errors.New("unknown secret")

// item is one resolved resource: a certificate for an identity or a validation context for bundles.
type item struct {
	name    string
	svid    *cache.SVID            // set for a tls_certificate
	bundles []*spiffebundle.Bundle // set for a validation_context
	all     *cache.Update          // for ALL with federated bundles: the memo key
}

// resolveAll returns every identity (by SPIFFE ID, first entry wins) and every bundle (by trust domain ID).
func resolveAll(u *cache.Update) []item {
	var out []item
	seen := map[spiffeid.ID]bool{}
	for _, id := range u.Identities {
		if seen[id.SVID.ID] {
			continue
		}
		seen[id.SVID.ID] = true
		out = append(out, item{name: id.SVID.ID.String(), svid: id.SVID})
	}
	for _, b := range sortedBundles(u) {
		out = append(out, item{name: b.TrustDomain().IDString(), bundles: []*spiffebundle.Bundle{b}})
	}
	return out
}

func sortedBundles(u *cache.Update) []*spiffebundle.Bundle {
	bs := u.Bundles()
	slices.SortFunc(bs, func(a, b *spiffebundle.Bundle) int {
		return strings.Compare(a.TrustDomain().Name(), b.TrustDomain().Name())
	})
	return bs
}

// resolve finds one named resource in an Update. The error wraps errUnknownName.
func resolve(u *cache.Update, name string) (item, error) {
	switch name {
	case NameDefault:
		if len(u.Identities) == 0 {
			return item{}, fmt.Errorf("%w %q: this workload has no identity yet", errUnknownName, name)
		}
		return item{name: name, svid: u.Identities[0].SVID}, nil
	case NameRootCA:
		if u.Bundle == nil {
			return item{}, fmt.Errorf("%w %q: the agent has no trust bundle yet", errUnknownName, name)
		}
		return item{name: name, bundles: []*spiffebundle.Bundle{u.Bundle}}, nil
	case NameAll:
		bs := sortedBundles(u)
		if len(bs) == 0 {
			return item{}, fmt.Errorf("%w %q: the agent has no trust bundle yet", errUnknownName, name)
		}
		it := item{name: name, bundles: bs}
		if len(bs) > 1 {
			it.all = u
		}
		return it, nil
	}
	if !strings.HasPrefix(name, "spiffe://") {
		return item{}, fmt.Errorf("%w %q: want %s, %s, %s, a SPIFFE ID or spiffe://<trust domain>", errUnknownName, name, NameDefault, NameRootCA, NameAll)
	}
	if td, err := spiffeid.TrustDomainFromString(name); err == nil && td.IDString() == name {
		for _, b := range u.Bundles() {
			if b.TrustDomain() == td {
				return item{name: name, bundles: []*spiffebundle.Bundle{b}}, nil
			}
		}
		return item{}, fmt.Errorf("%w %q: the agent has no bundle for trust domain %s", errUnknownName, name, td.Name())
	}
	id, err := spiffeid.FromString(name)
	if err != nil {
		return item{}, fmt.Errorf("%w %q: %v", errUnknownName, name, err)
	}
	for _, ident := range u.Identities {
		if ident.SVID.ID == id {
			return item{name: name, svid: ident.SVID}, nil
		}
	}
	return item{}, fmt.Errorf("%w %q: no identity with this SPIFFE ID for this workload", errUnknownName, name)
}

// maxNames is the most distinct resource names one stream (or one FetchSecrets call) may ask for. A proxy
// asks for a handful; the cap keeps a request from making the agent build and hold huge responses.
const maxNames = 128

// requestedNames returns names without repeats, in first-seen order. More than maxNames distinct names
// is an InvalidArgument status error.
func requestedNames(names []string) ([]string, error) {
	if len(names) <= 1 {
		return slices.Clone(names), nil
	}
	seen := make(map[string]struct{}, min(len(names), maxNames+1))
	out := make([]string, 0, min(len(names), maxNames))
	for _, n := range names {
		if _, ok := seen[n]; ok {
			continue
		}
		if len(seen) == maxNames {
			return nil, tooManyNames()
		}
		seen[n] = struct{}{}
		out = append(out, n)
	}
	return out, nil
}

func tooManyNames() error {
	return status.Errorf(codes.InvalidArgument, "more than %d distinct resource names requested: at most %d are served per request; ask for fewer names, or for none to get everything the workload may have", maxNames, maxNames)
}

// resolveNames resolves each name (names are distinct: see requestedNames); with strict it fails on the
// first unknown name, otherwise it skips them.
func resolveNames(u *cache.Update, names []string, strict bool) ([]item, error) {
	if len(names) == 0 {
		return resolveAll(u), nil
	}
	out := make([]item, 0, len(names))
	for _, n := range names {
		it, err := resolve(u, n)
		if err != nil {
			if strict {
				return nil, err
			}
			continue
		}
		out = append(out, it)
	}
	return out, nil
}

// built is a secret ready to send, with its content version.
type built struct {
	any     *anypb.Any
	version string
}

type memoKey struct {
	name   string
	form   form
	svid   *cache.SVID
	bundle *spiffebundle.Bundle
	all    *cache.Update
}

// memo shares built secrets between streams: every stream of a selector set (and every stream asking
// for the same bundle) sends the same bytes. Keys hold pointers to immutable SVIDs and bundles, so an
// entry never goes stale; the memo is emptied when it grows past maxMemo.
type memo struct {
	mu sync.Mutex
	m  map[memoKey]built
}

const maxMemo = 4096

func (m *memo) build(it item, f form) (built, error) {
	// Certificates do not depend on the validation form; validation contexts do.
	k := memoKey{name: it.name, svid: it.svid, all: it.all}
	if it.svid == nil {
		k.form = f
		if it.all == nil {
			k.bundle = it.bundles[0]
		}
	}
	m.mu.Lock()
	b, ok := m.m[k]
	m.mu.Unlock()
	if ok {
		return b, nil
	}
	b, err := buildSecret(it, f)
	if err != nil {
		return built{}, err
	}
	m.mu.Lock()
	if m.m == nil || len(m.m) >= maxMemo {
		m.m = make(map[memoKey]built)
	}
	m.m[k] = b
	m.mu.Unlock()
	return b, nil
}

func buildSecret(it item, f form) (built, error) {
	var secret *tlsv3.Secret
	if it.svid != nil {
		secret = &tlsv3.Secret{Name: it.name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(it.svid.ChainPEM()),
			PrivateKey:       inline(it.svid.KeyPEM()),
		}}}
	} else {
		vc, err := validationContext(it.bundles, f)
		if err != nil {
			return built{}, err
		}
		secret = &tlsv3.Secret{Name: it.name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: vc}}
	}
	a, err := anypb.New(secret)
	if err != nil {
		return built{}, fmt.Errorf("marshal secret %q: %w", it.name, err)
	}
	sum := sha256.Sum256(a.Value)
	return built{any: a, version: hex.EncodeToString(sum[:8])}, nil
}

func validationContext(bundles []*spiffebundle.Bundle, f form) (*tlsv3.CertificateValidationContext, error) {
	if f == formTrustedCA {
		var all []byte
		for _, b := range bundles {
			all = append(all, bundlePEM(b)...)
		}
		return &tlsv3.CertificateValidationContext{TrustedCa: inline(all)}, nil
	}
	cfg := &tlsv3.SPIFFECertValidatorConfig{}
	for _, b := range bundles {
		cfg.TrustDomains = append(cfg.TrustDomains, &tlsv3.SPIFFECertValidatorConfig_TrustDomain{
			Name:        b.TrustDomain().Name(),
			TrustBundle: inline(bundlePEM(b)),
		})
	}
	typed, err := anypb.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("marshal spiffe validator config: %w", err)
	}
	return &tlsv3.CertificateValidationContext{CustomValidatorConfig: &corev3.TypedExtensionConfig{
		Name:        spiffeValidatorName,
		TypedConfig: typed,
	}}, nil
}

func bundlePEM(b *spiffebundle.Bundle) []byte {
	var out []byte
	for _, c := range b.X509Authorities() {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

// responseVersion is the version_info of a state-of-the-world response: a digest of its resources.
func responseVersion(names []string, bs []built) string {
	h := sha256.New()
	for i, b := range bs {
		h.Write([]byte(names[i]))
		h.Write([]byte{0})
		h.Write([]byte(b.version))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}
