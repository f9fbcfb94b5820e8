package meshimport

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"gopkg.in/yaml.v3"

	"github.com/kithid/kith/authz/grant"
)

// Options says how Kubernetes identities become SPIFFE IDs.
type Options struct {
	// TrustDomain is Kith's. Required.
	TrustDomain spiffeid.TrustDomain
	// ServiceAccountID renders the SPIFFE ID of a service account, as the Kubernetes integration does
	// (the template spiffe://{{.TrustDomain}}/ns/{{.Namespace}}/sa/{{.ServiceAccount}} by default).
	// Zero: that default template.
	ServiceAccountID func(namespace, serviceAccount string) (string, error)
	// TrustDomainAliases are the trust domains of principals that mean TrustDomain. Zero: Istio's default,
	// cluster.local.
	TrustDomainAliases []string
	// Workloads are the identities label selectors choose from (Istio's selector, SMI's podLabelSelector).
	Workloads []Workload
	// SkipUnsupported skips what Kith cannot express, listing it in Result.Skipped, instead of refusing
	// the whole import.
	SkipUnsupported bool
	// RootNamespace is Istio's root namespace, whose policies apply to every namespace. Zero: istio-system.
	RootNamespace string
}

// Workload is an identity a label selector can choose: a registration entry's SPIFFE ID, the namespace
// it is in (its path's segment after "ns", as the default template puts it) and its labels.
type Workload struct {
	ID        string
	Namespace string
	Labels    map[string]string
}

// WorkloadOf is the Workload of an entry's SPIFFE ID and labels.
func WorkloadOf(id string, labels map[string]string) Workload {
	w := Workload{ID: id, Labels: labels}
	segs := strings.Split(id, "/")
	for i := 3; i+1 < len(segs); i++ {
		if segs[i] == "ns" {
			w.Namespace = segs[i+1]
			break
		}
	}
	return w
}

// Result is what a conversion produced.
type Result struct {
	Grants  []grant.Grant // grants and deny rules, ordered by ID
	Skipped []string      // what was not imported, and why (with SkipUnsupported, or what means nothing to Kith)
	Objects []string      // the policies converted, as "kind namespace/name", each with its number of grants
}

// Unsupported is a field Kith cannot express.
type Unsupported struct {
	Object string // "AuthorizationPolicy foo/httpbin"
	Field  string // "spec.rules[0].when"
	Why    string
}

func (u *Unsupported) Error() string {
	return fmt.Sprintf("%s: %s: %s", u.Object, u.Field, u.Why)
}

// Defaults fills the zero fields of o and checks it.
func (o Options) Defaults() (Options, error) {
	if o.TrustDomain.IsZero() {
		return o, errors.New("mesh import: the trust domain is required")
	}
	if o.ServiceAccountID == nil {
		td := o.TrustDomain.Name()
		o.ServiceAccountID = func(ns, sa string) (string, error) {
			return "spiffe://" + td + "/ns/" + ns + "/sa/" + sa, nil
		}
	}
	if o.TrustDomainAliases == nil {
		o.TrustDomainAliases = []string{"cluster.local"}
	}
	if o.RootNamespace == "" {
		o.RootNamespace = "istio-system"
	}
	return o, nil
}

// ServiceAccount is the SPIFFE ID of a service account, checked.
func (o Options) ServiceAccount(ns, sa string) (string, error) {
	if ns == "" || sa == "" || strings.ContainsAny(ns+sa, "/*") {
		return "", fmt.Errorf("service account %q in namespace %q: want a name and a namespace without / or *", sa, ns)
	}
	s, err := o.ServiceAccountID(ns, sa)
	if err != nil {
		return "", err
	}
	id, err := spiffeid.FromString(s)
	if err != nil {
		return "", fmt.Errorf("service account %s/%s: %q: %w", ns, sa, s, err)
	}
	return id.String(), nil
}

const saPlaceholder = "kith-service-account-placeholder"

// Namespace is the caller pattern of every service account of a namespace: the SPIFFE ID template with
// the service account cut off ("spiffe://td/ns/prod/sa/*"). The template must put the service account
// last, in a segment of its own.
func (o Options) Namespace(ns string) (string, error) {
	s, err := o.ServiceAccount(ns, saPlaceholder)
	if err != nil {
		return "", err
	}
	prefix, ok := strings.CutSuffix(s, "/"+saPlaceholder)
	if !ok {
		return "", fmt.Errorf("namespace %s: the SPIFFE ID template does not end with the service account in a segment of its own (%s), so no ID prefix holds a namespace", ns, s)
	}
	return prefix + "/*", nil
}

// Principal is the SPIFFE ID of an Istio-style principal "TD/ns/NS/sa/SA" (the trust domain first, no
// scheme); a trust domain in TrustDomainAliases is Kith's.
func (o Options) Principal(p string) (string, error) {
	td, path, ok := strings.Cut(p, "/")
	if !ok || td == "" {
		return "", fmt.Errorf("principal %q: want TRUST-DOMAIN/PATH such as cluster.local/ns/default/sa/sleep", p)
	}
	if slices.Contains(o.TrustDomainAliases, td) {
		td = o.TrustDomain.Name()
	}
	id, err := spiffeid.FromString("spiffe://" + td + "/" + path)
	if err != nil {
		return "", fmt.Errorf("principal %q: %w", p, err)
	}
	return id.String(), nil
}

// Select returns the SPIFFE IDs of the workloads in namespace ns (every namespace when ns is "") whose
// labels include all of match, sorted and without repeats.
func (o Options) Select(ns string, match map[string]string) []string {
	var ids []string
	for _, w := range o.Workloads {
		if ns != "" && w.Namespace != ns {
			continue
		}
		ok := true
		for k, v := range match {
			if w.Labels[k] != v {
				ok = false
				break
			}
		}
		if ok && !slices.Contains(ids, w.ID) {
			ids = append(ids, w.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

// GrantID is the ID of an imported grant: prefix ("smi-", "istio-") and a digest of where it comes from
// and what it is for, so that importing the same policy again gives the same IDs.
func GrantID(prefix string, parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return prefix + hex.EncodeToString(h[:8])
}

// Sort orders grants by ID and drops exact repeats (the same ID).
func Sort(gs []grant.Grant) []grant.Grant {
	slices.SortFunc(gs, func(a, b grant.Grant) int { return strings.Compare(a.ID, b.ID) })
	return slices.CompactFunc(gs, func(a, b grant.Grant) bool { return a.ID == b.ID })
}

// LabelString renders labels as "a=b,c=d", sorted.
func LabelString(labels map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, ",")
}

// Export is what an export produced: the objects to write and what could not be expressed.
type Export struct {
	Objects []any    // Kubernetes objects, to be written as YAML documents
	Skipped []string // "grant ID (source): why", for each grant left out
}

// ServiceAccountOf is the namespace and service account whose SPIFFE ID (through opts.ServiceAccountID)
// is id, if there is one: the template is applied with the namespace and name found at the places the
// template puts them.
func (o Options) ServiceAccountOf(id string) (ns, sa string, ok bool) {
	probe, err := o.ServiceAccountID("kith-ns-placeholder", saPlaceholder)
	if err != nil {
		return "", "", false
	}
	before, rest, found := strings.Cut(probe, "kith-ns-placeholder")
	if !found {
		return "", "", false
	}
	middle, after, found := strings.Cut(rest, saPlaceholder)
	if !found || !strings.HasPrefix(id, before) || !strings.HasSuffix(id, after) {
		return "", "", false
	}
	body := strings.TrimSuffix(strings.TrimPrefix(id, before), after)
	ns, sa, found = strings.Cut(body, middle)
	if !found || ns == "" || sa == "" || strings.Contains(sa, "/") || strings.Contains(ns, "/") {
		return "", "", false
	}
	if back, err := o.ServiceAccount(ns, sa); err != nil || back != id {
		return "", "", false
	}
	return ns, sa, true
}

// PathRegex is the RE2 expression (anchored at the start) that matches the same request paths as the
// Kith path pattern p: a trailing "/*" is everything below, a "*" elsewhere any run within a segment.
func PathRegex(p string) string {
	body, trailing := strings.CutSuffix(p, "/*")
	var b strings.Builder
	for i, part := range strings.Split(body, "*") {
		if i > 0 {
			b.WriteString("[^/]*")
		}
		b.WriteString(regexp.QuoteMeta(part))
	}
	if trailing {
		b.WriteString("/")
	} else {
		b.WriteString("$")
	}
	return b.String()
}

// WriteYAML writes x as YAML documents, what was left out first as comments, so that the output can be
// imported again (kith import) or applied to a cluster.
func WriteYAML(w io.Writer, x *Export) error {
	for _, s := range x.Skipped {
		if _, err := fmt.Fprintf(w, "# not exported: %s\n", strings.ReplaceAll(s, "\n", " ")); err != nil {
			return err
		}
	}
	for _, o := range x.Objects {
		// Through JSON, so that the objects' json field names are the YAML keys.
		j, err := json.Marshal(o)
		if err != nil {
			return err
		}
		var doc any
		if err := json.Unmarshal(j, &doc); err != nil {
			return err
		}
		b, err := yaml.Marshal(doc)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "---\n%s", b); err != nil {
			return err
		}
	}
	return nil
}
