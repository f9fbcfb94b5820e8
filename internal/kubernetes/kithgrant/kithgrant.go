// Package kithgrant turns KithGrant resources into grants. Each namespace's KithGrants are written
// together, as the grants with source prefix "k8s:<namespace>/" (one transaction, one audit row), so
// that an update is never seen half-done and a deleted object's grant goes with the write. Each grant's
// source is "k8s:<namespace>/<name>"; the admin API refuses to revoke it. The status of each KithGrant
// says the grant ID it became, or why it was refused.
package kithgrant

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/internal/kubernetes"
	"github.com/kithid/kith/internal/kubernetes/apis/v1alpha1"
	"github.com/kithid/kith/internal/store"
)

// Actor is who the audit log says wrote the grants.
const Actor = "k8s:controller"

// Store is what the controller needs of the store.
type Store interface {
	ReplaceGrantsFromSource(ctx context.Context, actor, prefix, source string, grants []grant.Grant) error
	ListGrants(ctx context.Context, f store.GrantFilter) ([]grant.Grant, error)
}

// Config configures a Controller.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	// Template expands a {namespace, serviceAccount} shorthand; default v1alpha1.DefaultSPIFFEIDTemplate.
	Template string
	Dynamic  dynamic.Interface
	Store    Store
	Resync   time.Duration // default 10 minutes
	Now      func() time.Time
	Logger   *slog.Logger
}

// Controller keeps the grants of KithGrant resources.
type Controller struct {
	cfg      Config
	log      *slog.Logger
	expand   func(ns, sa string) (string, error) // the cluster's service-account template
	informer cache.SharedIndexInformer
	queue    workqueue.TypedRateLimitingInterface[string] // namespaces

	mu      sync.Mutex
	written map[string][]grant.Grant                       // by namespace: what the store has
	objects map[string]map[string]v1alpha1.KithGrantStatus // by namespace and name: what became of each
}

// New makes a Controller; Run starts it.
func New(cfg Config) (*Controller, error) {
	if cfg.TrustDomain.IsZero() || cfg.Dynamic == nil || cfg.Store == nil {
		return nil, errors.New("kubernetes grants: trust domain, client and store are required")
	}
	if cfg.Resync == 0 {
		cfg.Resync = 10 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	expand, err := v1alpha1.ServiceAccountID(cfg.Template, cfg.TrustDomain.Name())
	if err != nil {
		return nil, fmt.Errorf("kubernetes grants: %w", err)
	}
	inf, err := kubernetes.NewInformer(cfg.Dynamic, v1alpha1.KithGrants, cfg.Resync, nil)
	if err != nil {
		return nil, err
	}
	c := &Controller{cfg: cfg, log: cfg.Logger, expand: expand, informer: inf,
		queue:   workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](), workqueue.TypedRateLimitingQueueConfig[string]{Name: "kith-grants"}),
		written: map[string][]grant.Grant{},
		objects: map[string]map[string]v1alpha1.KithGrantStatus{},
	}
	enqueue := func(o any) {
		if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
			o = d.Obj
		}
		if m, err := meta.Accessor(o); err == nil {
			c.queue.Add(m.GetNamespace())
		}
	}
	c.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue,
		UpdateFunc: func(old, o any) {
			mo, _ := meta.Accessor(old)
			mn, _ := meta.Accessor(o)
			if mo != nil && mn != nil && mo.GetGeneration() == mn.GetGeneration() && mo.GetResourceVersion() != mn.GetResourceVersion() {
				return // a status or metadata change: the grant is the same
			}
			enqueue(o)
		},
		DeleteFunc: enqueue,
	})
	return c, nil
}

// Source is the source of the grant of the KithGrant namespace/name.
func Source(namespace, name string) string { return "k8s:" + namespace + "/" + name }

// Run reads which namespaces have grants in the store, starts the informer and reconciles until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	all, err := c.cfg.Store.ListGrants(ctx, store.GrantFilter{})
	if err != nil {
		return fmt.Errorf("kubernetes grants: read the grants kept so far: %w", err)
	}
	c.mu.Lock()
	for _, g := range all {
		if rest, ok := strings.CutPrefix(g.Source, "k8s:"); ok {
			ns, _, _ := strings.Cut(rest, "/")
			c.written[ns] = append(c.written[ns], g)
		}
	}
	stale := slices.Collect(maps.Keys(c.written))
	c.mu.Unlock()
	defer c.queue.ShutDown()
	go c.informer.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), c.informer.HasSynced) {
		return ctx.Err()
	}
	for _, ns := range stale { // namespaces whose KithGrants may all have gone while the server was down
		c.queue.Add(ns)
	}
	go func() {
		<-ctx.Done()
		c.queue.ShutDown()
	}()
	for {
		ns, quit := c.queue.Get()
		if quit {
			return nil
		}
		if err := c.reconcile(ctx, ns); err != nil {
			c.log.Warn("kubernetes grants: reconcile namespace", "namespace", ns, "err", err)
			c.queue.AddRateLimited(ns)
		} else {
			c.queue.Forget(ns)
		}
		c.queue.Done(ns)
	}
}

// reconcile writes the grants of every KithGrant in ns, then their status.
func (c *Controller) reconcile(ctx context.Context, ns string) error {
	objs, err := c.informer.GetIndexer().ByIndex(cache.NamespaceIndex, ns)
	if err != nil {
		return err
	}
	var grants []grant.Grant
	statuses := map[string]v1alpha1.KithGrantStatus{}
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		kg, err := v1alpha1.GrantFrom(u)
		if err != nil {
			statuses[u.GetName()] = v1alpha1.KithGrantStatus{Reason: err.Error(), ObservedGeneration: u.GetGeneration()}
			continue
		}
		g, err := c.grantOf(kg)
		st := v1alpha1.KithGrantStatus{ObservedGeneration: kg.Generation, Caller: g.Caller, Target: g.Target}
		if err != nil {
			st.Reason = err.Error()
		} else {
			st.GrantID = g.ID
			grants = append(grants, g)
		}
		statuses[kg.Name] = st
	}
	slices.SortFunc(grants, func(a, b grant.Grant) int { return strings.Compare(a.ID, b.ID) })
	c.mu.Lock()
	same := slices.EqualFunc(c.written[ns], grants, sameGrant)
	if len(statuses) == 0 {
		delete(c.objects, ns)
	} else {
		c.objects[ns] = statuses
	}
	c.mu.Unlock()
	if !same {
		if err := c.cfg.Store.ReplaceGrantsFromSource(ctx, Actor, "k8s:"+ns+"/", "k8s:"+ns, grants); err != nil {
			return fmt.Errorf("write the grants of namespace %s: %w", ns, err)
		}
		c.mu.Lock()
		c.written[ns] = grants
		c.mu.Unlock()
	}
	var errs []error
	for _, o := range objs {
		u := o.(*unstructured.Unstructured)
		if err := c.writeStatus(ctx, u, statuses[u.GetName()]); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ObjectStatus is what became of one KithGrant: its grant, or why it was refused.
type ObjectStatus struct {
	Namespace, Name string
	GrantID         string
	Refused         string
}

// Status returns what became of each KithGrant the controller has reconciled, by namespace and name.
func (c *Controller) Status() []ObjectStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []ObjectStatus
	for _, ns := range slices.Sorted(maps.Keys(c.objects)) {
		for _, name := range slices.Sorted(maps.Keys(c.objects[ns])) {
			st := c.objects[ns][name]
			out = append(out, ObjectStatus{Namespace: ns, Name: name, GrantID: st.GrantID, Refused: st.Reason})
		}
	}
	return out
}

// Synced reports whether the informer has listed the cluster's KithGrants once.
func (c *Controller) Synced() bool { return c.informer.HasSynced() }

func sameGrant(a, b grant.Grant) bool {
	return a.ID == b.ID && a.Caller == b.Caller && a.Target == b.Target && slices.Equal(a.Methods, b.Methods) &&
		slices.Equal(a.Paths, b.Paths) && a.ExpiresAt.Equal(b.ExpiresAt) && a.Reason == b.Reason && a.Source == b.Source
}

// grantOf is the grant kg asks for, or why it cannot be had.
func (c *Controller) grantOf(kg *v1alpha1.KithGrant) (grant.Grant, error) {
	src := Source(kg.Namespace, kg.Name)
	// The ID is stable for the object (a re-created object with the same name gets another).
	sum := sha256.Sum256([]byte(src + "\x00" + string(kg.UID)))
	g := grant.Grant{ID: "k8s-" + hex.EncodeToString(sum[:8]), Methods: kg.Spec.Methods, Paths: kg.Spec.Paths,
		Reason: kg.Spec.Reason, CreatedBy: Actor, Source: src}
	if g.Reason == "" {
		g.Reason = "KithGrant " + kg.Namespace + "/" + kg.Name
	}
	var err error
	if g.Caller, err = c.party(kg.Spec.Caller); err != nil {
		return g, fmt.Errorf("caller: %w", err)
	}
	if g.Target, err = c.party(kg.Spec.Target); err != nil {
		return g, fmt.Errorf("target: %w", err)
	}
	if kg.Spec.Expires != nil {
		g.ExpiresAt = kg.Spec.Expires.UTC()
		if !g.ExpiresAt.After(c.cfg.Now()) {
			return g, fmt.Errorf("expired at %s", g.ExpiresAt.Format(time.RFC3339))
		}
	}
	if err := g.Validate(); err != nil {
		return g, err
	}
	return g, nil
}

// party is the SPIFFE ID (or prefix) of a caller or target, expanding the shorthand.
func (c *Controller) party(p v1alpha1.Party) (string, error) {
	s := p.SPIFFEID
	if s == "" {
		if p.Namespace == "" || p.ServiceAccount == "" {
			return "", errors.New("give spiffeID, or namespace and serviceAccount")
		}
		var err error
		if s, err = c.expand(p.Namespace, p.ServiceAccount); err != nil {
			return "", fmt.Errorf("expand %s/%s: %w", p.Namespace, p.ServiceAccount, err)
		}
	}
	id := strings.TrimSuffix(s, "/*")
	parsed, err := spiffeid.FromString(id)
	if s == "spiffe://"+c.cfg.TrustDomain.Name()+"/*" {
		parsed, err = spiffeid.FromString("spiffe://" + c.cfg.TrustDomain.Name())
	}
	if err != nil {
		return "", fmt.Errorf("%q is not a SPIFFE ID: %w", s, err)
	}
	if parsed.TrustDomain() != c.cfg.TrustDomain {
		return "", fmt.Errorf("%s is outside the trust domain %s", s, c.cfg.TrustDomain.Name())
	}
	return s, nil
}

func (c *Controller) writeStatus(ctx context.Context, u *unstructured.Unstructured, st v1alpha1.KithGrantStatus) error {
	old, err := v1alpha1.GrantFrom(u)
	if err != nil {
		old = &v1alpha1.KithGrant{}
	}
	st.Conditions = slices.Clone(old.Status.Conditions)
	cond := metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Granted",
		Message: "grant " + st.GrantID, ObservedGeneration: st.ObservedGeneration}
	if st.Reason != "" {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, "Refused", st.Reason
	}
	meta.SetStatusCondition(&st.Conditions, cond)
	o := old.Status
	if o.GrantID == st.GrantID && o.Caller == st.Caller && o.Target == st.Target && o.Reason == st.Reason &&
		o.ObservedGeneration == st.ObservedGeneration && meta.IsStatusConditionPresentAndEqual(o.Conditions, cond.Type, cond.Status) {
		return nil
	}
	// Empty fields must be cleared, not left out of the merge patch.
	status := map[string]any{"grantID": st.GrantID, "caller": st.Caller, "target": st.Target, "reason": st.Reason,
		"observedGeneration": st.ObservedGeneration, "conditions": st.Conditions}
	for k, v := range status {
		if v == "" {
			status[k] = nil
		}
	}
	patch, err := json.Marshal(map[string]any{"status": status})
	if err != nil {
		return err
	}
	_, err = c.cfg.Dynamic.Resource(v1alpha1.KithGrants).Namespace(u.GetNamespace()).Patch(ctx, u.GetName(), types.MergePatchType, patch,
		metav1.PatchOptions{FieldManager: "kith"}, "status")
	return err
}
