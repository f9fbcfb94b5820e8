// Package meshpolicy keeps the grants of a cluster's mesh policies: SMI TrafficTargets with their
// HTTPRouteGroups, TCPRoutes, UDPRoutes and IdentityBindings, and Istio AuthorizationPolicies, watched with
// informers of the dynamic client and converted by authz/meshimport as `kith import` converts files.
// The SMI grants (source prefix "smi:") and the Istio ones ("istio:") are each written as one set, in one
// transaction, when they change. An object Kith refuses (a missing route group, a field Kith cannot
// express) is left out, its reason logged and posted as a Warning Event on the object; the others are
// imported. Kinds whose CRDs the cluster does not have are not watched.
package meshpolicy

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/authz/meshimport"
	"github.com/kithid/kith/authz/meshimport/istio"
	"github.com/kithid/kith/authz/meshimport/smi"
	"github.com/kithid/kith/internal/kubernetes"
	"github.com/kithid/kith/internal/store"
)

// Actor is who the audit log says wrote the grants.
const Actor = "k8s:meshpolicy"

// The resources watched, at the versions meshes serve them (OSM: access v1alpha3, specs v1alpha4).
var (
	TrafficTargets   = schema.GroupVersionResource{Group: smi.AccessGroup, Version: "v1alpha3", Resource: "traffictargets"}
	HTTPRouteGroups  = schema.GroupVersionResource{Group: smi.SpecsGroup, Version: "v1alpha4", Resource: "httproutegroups"}
	TCPRoutes        = schema.GroupVersionResource{Group: smi.SpecsGroup, Version: "v1alpha4", Resource: "tcproutes"}
	UDPRoutes        = schema.GroupVersionResource{Group: smi.SpecsGroup, Version: "v1alpha4", Resource: "udproutes"}
	AuthzPolicies    = schema.GroupVersionResource{Group: istio.Group, Version: "v1", Resource: "authorizationpolicies"}
	events           = schema.GroupVersionResource{Version: "v1", Resource: "events"}
	smiResources     = []schema.GroupVersionResource{TrafficTargets, HTTPRouteGroups, TCPRoutes, UDPRoutes}
	istioResources   = []schema.GroupVersionResource{AuthzPolicies}
	watchedResources = append(slices.Clone(smiResources), istioResources...)
)

// Store is what the controller needs of the store.
type Store interface {
	ReplaceGrantsFromSource(ctx context.Context, actor, prefix, source string, grants []grant.Grant) error
	ListGrants(ctx context.Context, f store.GrantFilter) ([]grant.Grant, error)
	ListEntries(ctx context.Context, f store.EntryFilter) ([]store.Entry, error)
}

// Config configures a Controller.
type Config struct {
	Options meshimport.Options // trust domain, SPIFFE ID template, aliases; Workloads are read from Store
	Dynamic dynamic.Interface
	Store   Store
	Resync  time.Duration // default 10 minutes
	Logger  *slog.Logger
}

// Controller keeps the grants of a cluster's mesh policies.
type Controller struct {
	cfg       Config
	log       *slog.Logger
	informers map[schema.GroupVersionResource]cache.SharedIndexInformer
	queue     workqueue.TypedRateLimitingInterface[string]

	mu      sync.Mutex
	written map[string][]grant.Grant // by prefix
	warned  map[string]string        // object UID -> the refusal last posted
	status  map[string]string        // "TrafficTarget ns/name" -> its effect, for Status
}

// New makes a Controller; Run starts it.
func New(cfg Config) (*Controller, error) {
	if cfg.Options.TrustDomain.IsZero() || cfg.Dynamic == nil || cfg.Store == nil {
		return nil, errors.New("mesh policies: trust domain, client and store are required")
	}
	if cfg.Resync == 0 {
		cfg.Resync = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Controller{cfg: cfg, log: cfg.Logger, informers: map[schema.GroupVersionResource]cache.SharedIndexInformer{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "kith-mesh-policies"}),
		written: map[string][]grant.Grant{}, warned: map[string]string{}, status: map[string]string{}}
	return c, nil
}

// Status says what each mesh policy object became: "3 grants" or "refused: ...".
func (c *Controller) Status() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]string, len(c.status))
	for k, v := range c.status {
		out[k] = v
	}
	return out
}

// Run starts the informers of the resources the cluster has and keeps the grants until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	for _, gvr := range watchedResources {
		if _, err := c.cfg.Dynamic.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1}); apierrors.IsNotFound(err) {
			c.log.Info("mesh policies: the cluster does not serve this resource; not watched", "resource", gvr.String())
			continue
		} else if apierrors.IsForbidden(err) {
			c.log.Warn("mesh policies: the server may not list this resource; not watched (the kith-server ClusterRole of deploy/kubernetes grants it)",
				"resource", gvr.String(), "err", err)
			continue
		} else if err != nil {
			return fmt.Errorf("mesh policies: list %s: %w", gvr.Resource, err)
		}
		inf, err := kubernetes.NewInformer(c.cfg.Dynamic, gvr, c.cfg.Resync, nil)
		if err != nil {
			return err
		}
		key := "smi"
		if slices.Contains(istioResources, gvr) {
			key = "istio"
		}
		enqueue := func(any) { c.queue.Add(key) }
		inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) }, DeleteFunc: enqueue})
		c.informers[gvr] = inf
	}
	defer c.queue.ShutDown()
	var synced []cache.InformerSynced
	for _, inf := range c.informers {
		go inf.RunWithContext(ctx)
		synced = append(synced, inf.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return ctx.Err()
	}
	c.queue.Add("smi") // also when nothing is watched: grants kept from an earlier run may have to go
	c.queue.Add("istio")
	go func() {
		<-ctx.Done()
		c.queue.ShutDown()
	}()
	for {
		key, quit := c.queue.Get()
		if quit {
			return nil
		}
		if err := c.reconcile(ctx, key); err != nil {
			c.log.Warn("mesh policies: reconcile", "kind", key, "err", err)
			c.queue.AddRateLimited(key)
		} else {
			c.queue.Forget(key)
		}
		c.queue.Done(key)
	}
}

// objects are the cached objects of the resources given, as meshimport objects.
func (c *Controller) objects(gvrs []schema.GroupVersionResource) ([]meshimport.Object, map[string]*unstructured.Unstructured) {
	var objs []meshimport.Object
	byRef := map[string]*unstructured.Unstructured{}
	for _, gvr := range gvrs {
		inf, ok := c.informers[gvr]
		if !ok {
			continue
		}
		for _, o := range inf.GetStore().List() {
			u, ok := o.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			raw, err := json.Marshal(u.Object)
			if err != nil {
				continue
			}
			mo := meshimport.Object{APIVersion: u.GetAPIVersion(), Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName(),
				Labels: u.GetLabels(), Annotations: u.GetAnnotations(), Raw: raw, File: "cluster " + gvr.Resource}
			objs = append(objs, mo)
			byRef[mo.Kind+" "+mo.Ref()] = u
		}
	}
	return objs, byRef
}

func (c *Controller) reconcile(ctx context.Context, key string) error {
	opts := c.cfg.Options
	entries, err := c.cfg.Store.ListEntries(ctx, store.EntryFilter{})
	if err != nil {
		return fmt.Errorf("list entries: %w", err)
	}
	opts.Workloads = nil
	for _, e := range entries {
		opts.Workloads = append(opts.Workloads, meshimport.WorkloadOf(e.SPIFFEID.String(), e.Labels))
	}
	var grants []grant.Grant
	status := map[string]string{}
	refused := map[string]string{} // "Kind ns/name" -> why
	// The Warning events go out last, once Status says what they say.
	var warnLater func()
	defer func() {
		if warnLater != nil {
			warnLater()
		}
	}()
	if key == "smi" {
		objs, byRef := c.objects(smiResources)
		// Each TrafficTarget on its own, with every route group: one refused leaves the others in force.
		var rest, targets []meshimport.Object
		for _, o := range objs {
			if o.Kind == smi.KindTrafficTarget {
				targets = append(targets, o)
			} else {
				rest = append(rest, o)
			}
		}
		for _, t := range targets {
			name := t.Kind + " " + t.Ref()
			p, err := smi.Parse(append([]meshimport.Object{t}, rest...))
			var res *meshimport.Result
			if err == nil {
				res, err = smi.Convert(p, opts)
			}
			if err != nil {
				refused[name] = err.Error()
				continue
			}
			grants = append(grants, res.Grants...)
			status[name] = fmt.Sprintf("%d grants", len(res.Grants))
		}
		warnLater = func() { c.warn(ctx, refused, byRef) }
	} else {
		objs, byRef := c.objects(istioResources)
		for _, o := range objs {
			name := o.Kind + " " + o.Ref()
			ps, _, err := istio.Parse([]meshimport.Object{o})
			var res *meshimport.Result
			if err == nil {
				res, err = istio.Convert(ps, opts)
			}
			if err != nil {
				refused[name] = err.Error()
				continue
			}
			grants = append(grants, res.Grants...)
			kind := "grants"
			if len(ps) == 1 && ps[0].Spec.Action == "DENY" {
				kind = "deny rules"
			}
			status[name] = fmt.Sprintf("%d %s", len(res.Grants), kind)
			if len(res.Skipped) > 0 {
				status[name] += "; " + strings.Join(res.Skipped, "; ")
			}
		}
		warnLater = func() { c.warn(ctx, refused, byRef) }
	}
	for name, why := range refused {
		status[name] = "refused: " + why
	}
	grants = meshimport.Sort(grants)
	prefix := key + ":"
	c.mu.Lock()
	old, known := c.written[prefix]
	c.mu.Unlock()
	if !known {
		all, err := c.cfg.Store.ListGrants(ctx, store.GrantFilter{})
		if err != nil {
			return fmt.Errorf("read the grants kept so far: %w", err)
		}
		for _, g := range all {
			if strings.HasPrefix(g.Source, prefix) {
				old = append(old, g)
			}
		}
	}
	if !slices.EqualFunc(old, grants, same) {
		if err := c.cfg.Store.ReplaceGrantsFromSource(ctx, Actor, prefix, key+":cluster", grants); err != nil {
			return fmt.Errorf("write the %s grants: %w", key, err)
		}
	}
	c.mu.Lock()
	c.written[prefix] = grants
	for k := range c.status {
		if strings.HasPrefix(k, smi.KindTrafficTarget+" ") == (key == "smi") {
			delete(c.status, k)
		}
	}
	for k, v := range status {
		c.status[k] = v
	}
	c.mu.Unlock()
	return nil
}

func same(a, b grant.Grant) bool {
	a.CreatedAt, a.CreatedBy, b.CreatedAt, b.CreatedBy = time.Time{}, "", time.Time{}, ""
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// warn posts a Warning Event on each refused object, once per reason.
func (c *Controller) warn(ctx context.Context, refused map[string]string, byRef map[string]*unstructured.Unstructured) {
	for name, why := range refused {
		u := byRef[name]
		if u == nil {
			continue
		}
		c.log.Warn("mesh policies: refused", "object", name, "reason", why)
		c.mu.Lock()
		posted := c.warned[string(u.GetUID())] == why
		c.warned[string(u.GetUID())] = why
		c.mu.Unlock()
		if posted {
			continue
		}
		sum := sha256.Sum256([]byte(string(u.GetUID()) + why))
		now := metav1.Now().UTC().Format(time.RFC3339)
		ev := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "Event",
			"metadata": map[string]any{"name": fmt.Sprintf("%s.%x", u.GetName(), sum[:6]), "namespace": u.GetNamespace()},
			"involvedObject": map[string]any{"apiVersion": u.GetAPIVersion(), "kind": u.GetKind(), "name": u.GetName(),
				"namespace": u.GetNamespace(), "uid": string(u.GetUID()), "resourceVersion": u.GetResourceVersion()},
			"reason": "KithRefused", "message": clip(why, 1024), "type": "Warning",
			"source":         map[string]any{"component": "kith-server"},
			"firstTimestamp": now, "lastTimestamp": now, "count": int64(1),
		}}
		if _, err := c.cfg.Dynamic.Resource(events).Namespace(u.GetNamespace()).Create(ctx, ev, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			c.log.Warn("mesh policies: post the refusal as an event", "object", name, "err", err)
		}
	}
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
