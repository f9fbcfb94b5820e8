// Package identity gives pods their SPIFFE IDs with no registration: it watches pods, namespaces, nodes
// and KithIdentity resources with shared informers and keeps one entry per (KithIdentity, pod), scoped
// to the k8s_psat agent of the pod's node (spiffe://TD/kith/agent/k8s_psat/<cluster>/<node UID>), with
// the selectors the k8s workload attestor emits for the pod (k8s:ns, k8s:sa, k8s:pod-uid).
//
// Work is per pod: an event enqueues the pods it concerns (a pod event its pod; a namespace's labels its
// pods; a node its pods; a KithIdentity every pod), and a worker compares the pod's wanted entries with
// the ones it keeps in memory, writing only the differences. Nothing lists the API server or the store
// per event: the store is read once at start, and the informers' periodic resync re-enqueues every pod
// so that a missed event is repaired by comparison. Entries carry source
// "k8s:kithidentity/<identity>/<namespace>/<pod>", which the admin API refuses to change.
package identity

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/internal/config"
	"github.com/kithid/kith/internal/kubernetes"
	"github.com/kithid/kith/internal/kubernetes/apis/v1alpha1"
	"github.com/kithid/kith/internal/store"
)

// SourcePrefix starts the source of every entry this package keeps.
const SourcePrefix = "k8s:kithidentity/"

// Actor is who the audit log says changed the entries.
const Actor = "k8s:controller"

// Store is what the controller needs of the store.
type Store interface {
	CreateEntry(ctx context.Context, actor string, e store.Entry) (store.Entry, error)
	UpdateEntry(ctx context.Context, actor string, e store.Entry) (store.Entry, error)
	DeleteEntry(ctx context.Context, actor string, id string) (store.Entry, error)
	ListEntries(ctx context.Context, f store.EntryFilter) ([]store.Entry, error)
}

// Config configures a Controller.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	Cluster     string // as the k8s_psat cluster is named: agents are spiffe://TD/kith/agent/k8s_psat/<Cluster>/<node UID>
	Dynamic     dynamic.Interface
	Store       Store
	// Resync is how often every pod is compared again (informer resync). Default 10 minutes.
	Resync time.Duration
	// StatusDelay gathers the status updates of a KithIdentity over this long. Default 1 s.
	StatusDelay time.Duration
	Workers     int // default 4
	Logger      *slog.Logger
}

// Controller keeps the entries of KithIdentity resources.
type Controller struct {
	cfg    Config
	log    *slog.Logger
	queue  workqueue.TypedRateLimitingInterface[string] // pod keys
	status workqueue.TypedDelayingInterface[string]     // KithIdentity names

	pods       cache.SharedIndexInformer
	namespaces cache.SharedIndexInformer
	nodes      cache.SharedIndexInformer
	idInformer cache.SharedIndexInformer
	synced     []cache.InformerSynced

	mu         sync.Mutex
	identities map[string]*compiled           // by name
	entries    map[string][]store.Entry       // kept entries by pod key
	matched    map[string]map[string]struct{} // identity → pod keys its selectors match
	errs       map[string]map[string]string   // identity → pod key → error rendering it
	started    bool
}

type compiled struct {
	obj    *v1alpha1.KithIdentity
	id     *template.Template
	dns    []*template.Template
	labels map[string]*template.Template
	podSel labels.Selector
	nsSel  labels.Selector
	ttl    time.Duration
	jwtTTL time.Duration
	fed    []spiffeid.TrustDomain // federatesWith
	err    error                  // the resource as a whole is invalid: no entries
}

const nodeIndex = "node"

// New makes a Controller; Run starts it.
func New(cfg Config) (*Controller, error) {
	if cfg.TrustDomain.IsZero() || cfg.Cluster == "" || cfg.Dynamic == nil || cfg.Store == nil {
		return nil, errors.New("kubernetes identities: trust domain, cluster, clients and store are required")
	}
	if cfg.Resync == 0 {
		cfg.Resync = 10 * time.Minute
	}
	if cfg.StatusDelay == 0 {
		cfg.StatusDelay = time.Second
	}
	if cfg.Workers == 0 {
		cfg.Workers = 4
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Controller{
		cfg: cfg, log: cfg.Logger,
		queue:      workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](), workqueue.TypedRateLimitingQueueConfig[string]{Name: "kith-pods"}),
		status:     workqueue.NewTypedDelayingQueueWithConfig(workqueue.TypedDelayingQueueConfig[string]{Name: "kith-identity-status"}),
		identities: map[string]*compiled{},
		entries:    map[string][]store.Entry{},
		matched:    map[string]map[string]struct{}{},
		errs:       map[string]map[string]string{},
	}
	var err error
	gvr := func(r string) schema.GroupVersionResource {
		return schema.GroupVersionResource{Version: "v1", Resource: r}
	}
	if c.pods, err = kubernetes.NewInformer(cfg.Dynamic, gvr("pods"), cfg.Resync, stripPod); err != nil {
		return nil, err
	}
	if err := c.pods.AddIndexers(cache.Indexers{nodeIndex: func(o any) ([]string, error) {
		if p, ok := o.(*corev1.Pod); ok && p.Spec.NodeName != "" {
			return []string{p.Spec.NodeName}, nil
		}
		return nil, nil
	}}); err != nil {
		return nil, err
	}
	if c.namespaces, err = kubernetes.NewInformer(cfg.Dynamic, gvr("namespaces"), cfg.Resync, stripNamespace); err != nil {
		return nil, err
	}
	if c.nodes, err = kubernetes.NewInformer(cfg.Dynamic, gvr("nodes"), cfg.Resync, stripNode); err != nil {
		return nil, err
	}
	if c.idInformer, err = kubernetes.NewInformer(cfg.Dynamic, v1alpha1.KithIdentities, cfg.Resync, nil); err != nil {
		return nil, err
	}
	nsInf, nodeInf := c.namespaces, c.nodes

	c.pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueuePod,
		UpdateFunc: func(_, o any) { c.enqueuePod(o) },
		DeleteFunc: c.enqueuePod,
	})
	nsInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) { c.enqueueIndexed(cache.NamespaceIndex, nameOf(o)) },
		UpdateFunc: func(old, o any) {
			if !maps.Equal(labelsOf(old), labelsOf(o)) {
				c.enqueueIndexed(cache.NamespaceIndex, nameOf(o))
			}
		},
		DeleteFunc: func(o any) { c.enqueueIndexed(cache.NamespaceIndex, nameOf(o)) },
	})
	nodeInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { c.enqueueIndexed(nodeIndex, nameOf(o)) },
		DeleteFunc: func(o any) { c.enqueueIndexed(nodeIndex, nameOf(o)) },
	})
	c.idInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: c.identityChanged,
		UpdateFunc: func(old, o any) {
			if nameOf(old) == nameOf(o) && generationOf(old) == generationOf(o) {
				c.identityStatusSeen(o) // only status (or metadata) changed: no pod is concerned
				return
			}
			c.identityChanged(o)
		},
		DeleteFunc: c.identityChanged,
	})
	c.synced = []cache.InformerSynced{c.pods.HasSynced, nsInf.HasSynced, nodeInf.HasSynced, c.idInformer.HasSynced}
	return c, nil
}

// stripNamespace keeps in the informer's cache only what the controller reads of a namespace.
func stripNamespace(o any) (any, error) {
	n, ok := kubernetes.Typed[corev1.Namespace](o)
	if !ok {
		return o, nil
	}
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, Labels: n.Labels, ResourceVersion: n.ResourceVersion}}, nil
}

// stripNode keeps in the informer's cache only what the controller reads of a node.
func stripNode(o any) (any, error) {
	n, ok := kubernetes.Typed[corev1.Node](o)
	if !ok {
		return o, nil
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion}}, nil
}

// stripPod keeps in the informer's cache only what the controller reads of a pod.
func stripPod(o any) (any, error) {
	p, ok := kubernetes.Typed[corev1.Pod](o)
	if !ok {
		return o, nil
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID, Labels: p.Labels,
			Annotations: p.Annotations, ResourceVersion: p.ResourceVersion, DeletionTimestamp: p.DeletionTimestamp},
		Spec:   corev1.PodSpec{NodeName: p.Spec.NodeName, ServiceAccountName: p.Spec.ServiceAccountName},
		Status: corev1.PodStatus{Phase: p.Status.Phase},
	}, nil
}

func nameOf(o any) string {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	if m, err := meta.Accessor(o); err == nil {
		return m.GetName()
	}
	return ""
}

func labelsOf(o any) map[string]string {
	if m, err := meta.Accessor(o); err == nil {
		return m.GetLabels()
	}
	return nil
}

func (c *Controller) enqueuePod(o any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(o)
	if err == nil {
		c.queue.Add(key)
	}
}

func (c *Controller) enqueueIndexed(index, value string) {
	objs, err := c.pods.GetIndexer().ByIndex(index, value)
	if err != nil {
		return
	}
	for _, o := range objs {
		c.enqueuePod(o)
	}
}

// enqueueAll enqueues every pod the informer knows and every pod the controller keeps entries for.
func (c *Controller) enqueueAll() {
	for _, k := range c.pods.GetIndexer().ListKeys() {
		c.queue.Add(k)
	}
	c.mu.Lock()
	keys := slices.Collect(maps.Keys(c.entries))
	c.mu.Unlock()
	for _, k := range keys {
		c.queue.Add(k)
	}
}

func (c *Controller) identityChanged(o any) {
	name := nameOf(o)
	var comp *compiled
	if u, ok := o.(*unstructured.Unstructured); ok {
		if _, exists, _ := c.idInformer.GetStore().Get(u); exists {
			comp = compile(u)
		}
	}
	c.mu.Lock()
	if comp == nil {
		delete(c.identities, name)
		delete(c.matched, name)
		delete(c.errs, name)
	} else {
		c.identities[name] = comp
	}
	c.mu.Unlock()
	c.enqueueAll()
	if comp != nil {
		c.status.AddAfter(name, c.cfg.StatusDelay)
	}
}

func generationOf(o any) int64 {
	if m, err := meta.Accessor(o); err == nil {
		return m.GetGeneration()
	}
	return -1
}

// identityStatusSeen records the status the API server now has, which writeStatus compares with.
func (c *Controller) identityStatusSeen(o any) {
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return
	}
	ki, err := v1alpha1.IdentityFrom(u)
	if err != nil {
		return
	}
	c.mu.Lock()
	if comp := c.identities[u.GetName()]; comp != nil {
		obj := *comp.obj
		obj.Status = ki.Status
		next := *comp
		next.obj = &obj
		c.identities[u.GetName()] = &next
	}
	c.mu.Unlock()
}

func compile(u *unstructured.Unstructured) *compiled {
	c := &compiled{}
	ki, err := v1alpha1.IdentityFrom(u)
	if err != nil {
		ki = &v1alpha1.KithIdentity{ObjectMeta: metav1.ObjectMeta{Name: u.GetName(), Generation: u.GetGeneration()}}
		c.obj, c.err = ki, err
		return c
	}
	c.obj = ki
	parse := func(what, s string) *template.Template {
		t, err := template.New(what).Option("missingkey=zero").Parse(s)
		if err != nil && c.err == nil {
			c.err = fmt.Errorf("%s: %w", what, err)
		}
		return t
	}
	c.id = parse("spiffeIDTemplate", ki.Spec.SPIFFEIDTemplate)
	for i, d := range ki.Spec.DNSNameTemplates {
		c.dns = append(c.dns, parse(fmt.Sprintf("dnsNameTemplates[%d]", i), d))
	}
	c.labels = map[string]*template.Template{}
	for k, v := range ki.Spec.Labels {
		c.labels[k] = parse("labels."+k, v)
	}
	sel := func(what string, s *metav1.LabelSelector) labels.Selector {
		if s == nil {
			return labels.Everything()
		}
		ls, err := metav1.LabelSelectorAsSelector(s)
		if err != nil && c.err == nil {
			c.err = fmt.Errorf("%s: %w", what, err)
		}
		return ls
	}
	c.podSel = sel("podSelector", ki.Spec.PodSelector)
	c.nsSel = sel("namespaceSelector", ki.Spec.NamespaceSelector)
	dur := func(what, s string) time.Duration {
		if s == "" {
			return 0
		}
		d, err := config.ParseDuration(s)
		if err != nil && c.err == nil {
			c.err = fmt.Errorf("%s: %w", what, err)
		}
		return d
	}
	c.ttl = dur("ttl", ki.Spec.TTL)
	c.jwtTTL = dur("jwtTTL", ki.Spec.JWTTTL)
	for _, n := range ki.Spec.FederatesWith {
		td, err := spiffeid.TrustDomainFromString(n)
		if err != nil {
			if c.err == nil {
				c.err = fmt.Errorf("federatesWith %q is not a trust domain name (such as partner.org): %w", n, err)
			}
			continue
		}
		if !slices.Contains(c.fed, td) {
			c.fed = append(c.fed, td)
		}
	}
	return c
}

// Source is the source of the entry identity keeps for the pod namespace/name.
func Source(identity, namespace, pod string) string {
	return SourcePrefix + identity + "/" + namespace + "/" + pod
}

// parseSource returns the identity and pod key of a source this package wrote.
func parseSource(src string) (identity, podKey string, ok bool) {
	rest, ok := strings.CutPrefix(src, SourcePrefix)
	if !ok {
		return "", "", false
	}
	parts := strings.SplitN(rest, "/", 3)
	if len(parts) != 3 {
		return "", "", false
	}
	return parts[0], parts[1] + "/" + parts[2], true
}

// Run loads the entries kept so far, starts the informers and the workers, and returns when ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	existing, err := c.cfg.Store.ListEntries(ctx, store.EntryFilter{SourcePrefix: SourcePrefix})
	if err != nil {
		return fmt.Errorf("kubernetes identities: read the entries kept so far: %w", err)
	}
	c.mu.Lock()
	for _, e := range existing {
		if _, key, ok := parseSource(e.Source); ok {
			c.entries[key] = append(c.entries[key], e)
		}
	}
	c.mu.Unlock()
	defer c.queue.ShutDown()
	defer c.status.ShutDown()
	for _, inf := range []cache.SharedIndexInformer{c.pods, c.namespaces, c.nodes, c.idInformer} {
		go inf.RunWithContext(ctx)
	}
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return ctx.Err()
	}
	c.mu.Lock()
	c.started = true
	c.mu.Unlock()
	c.log.Info("kubernetes identities: watching", "cluster", c.cfg.Cluster, "entries", len(existing))
	c.enqueueAll()
	var wg sync.WaitGroup
	for range c.cfg.Workers {
		wg.Go(func() {
			for c.work(ctx) {
			}
		})
	}
	wg.Go(func() {
		for c.statusWork(ctx) {
		}
	})
	// The informers' resync re-enqueues every pod; the pods that are gone but still have entries (a
	// missed delete) are enqueued here at the same period.
	t := time.NewTicker(c.cfg.Resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			c.queue.ShutDown()
			c.status.ShutDown()
			wg.Wait()
			return nil
		case <-t.C:
			c.enqueueAll()
		}
	}
}

// Synced reports whether the controller has started and its informers have synced.
func (c *Controller) Synced() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.started
}

func (c *Controller) work(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	if err := c.reconcile(ctx, key); err != nil {
		c.log.Warn("kubernetes identities: reconcile pod", "pod", key, "err", err)
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
	return true
}

// reconcile makes the entries kept for the pod key what its pod, namespace, node and the KithIdentity
// resources want, writing only the differences.
func (c *Controller) reconcile(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	want := map[string]store.Entry{} // by source
	matched := map[string]bool{}
	renderErrs := map[string]string{}
	pod := get[corev1.Pod](c.pods, key)
	if pod != nil && pod.Spec.NodeName != "" && pod.DeletionTimestamp == nil &&
		pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed {
		nd := get[corev1.Node](c.nodes, pod.Spec.NodeName)
		nsObj := get[corev1.Namespace](c.namespaces, ns)
		if nd != nil && nsObj != nil {
			agent, err := spiffeid.FromSegments(c.cfg.TrustDomain, "kith", "agent", "k8s_psat", c.cfg.Cluster, string(nd.UID))
			if err != nil {
				return fmt.Errorf("agent id for node %s: %w", nd.Name, err)
			}
			c.mu.Lock()
			ids := maps.Clone(c.identities)
			c.mu.Unlock()
			for idName, comp := range ids {
				if comp.err != nil || !comp.nsSel.Matches(labels.Set(nsObj.Labels)) || !comp.podSel.Matches(labels.Set(pod.Labels)) {
					continue
				}
				matched[idName] = true
				e, err := c.render(comp, pod, nsObj, agent)
				if err != nil {
					renderErrs[idName] = fmt.Sprintf("pod %s: %v", key, err)
					continue
				}
				e.Source = Source(idName, ns, name)
				want[e.Source] = e
			}
		}
	}

	c.mu.Lock()
	have := slices.Clone(c.entries[key])
	c.mu.Unlock()
	var kept []store.Entry
	var errs []error
	done := map[string]bool{}
	for _, e := range have {
		w, ok := want[e.Source]
		switch {
		case ok && !done[e.Source] && sameEntry(w, e):
			kept = append(kept, e)
		case ok && !done[e.Source]:
			w.ID = e.ID
			u, err := c.cfg.Store.UpdateEntry(ctx, Actor, w)
			if err != nil {
				errs = append(errs, err)
				kept = append(kept, e)
				break
			}
			kept = append(kept, u)
		default: // not wanted, or a duplicate
			if _, err := c.cfg.Store.DeleteEntry(ctx, Actor, e.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
				errs = append(errs, err)
				kept = append(kept, e)
				continue
			}
		}
		done[e.Source] = true
	}
	for _, src := range slices.Sorted(maps.Keys(want)) {
		if done[src] {
			continue
		}
		e, err := c.cfg.Store.CreateEntry(ctx, Actor, want[src])
		if err != nil {
			idName, _, _ := parseSource(src)
			renderErrs[idName] = fmt.Sprintf("pod %s: %v", key, err)
			continue
		}
		kept = append(kept, e)
	}

	c.mu.Lock()
	touched := map[string]bool{}
	for _, e := range have {
		id, _, _ := parseSource(e.Source)
		touched[id] = true
	}
	for _, e := range kept {
		id, _, _ := parseSource(e.Source)
		touched[id] = true
	}
	if len(kept) == 0 {
		delete(c.entries, key)
	} else {
		c.entries[key] = kept
	}
	for idName := range c.identities {
		m := c.matched[idName]
		_, was := m[key]
		if matched[idName] != was {
			touched[idName] = true
			if m == nil {
				m = map[string]struct{}{}
				c.matched[idName] = m
			}
			if matched[idName] {
				m[key] = struct{}{}
			} else {
				delete(m, key)
			}
		}
		em := c.errs[idName]
		if old, ok := em[key]; ok != (renderErrs[idName] != "") || old != renderErrs[idName] {
			touched[idName] = true
			if em == nil {
				em = map[string]string{}
				c.errs[idName] = em
			}
			if renderErrs[idName] != "" {
				em[key] = renderErrs[idName]
			} else {
				delete(em, key)
			}
		}
	}
	c.mu.Unlock()
	for idName := range touched {
		c.status.AddAfter(idName, c.cfg.StatusDelay)
	}
	return errors.Join(errs...)
}

// get returns the object the informer's cache has under key, if any.
func get[T any](inf cache.SharedIndexInformer, key string) *T {
	o, ok, err := inf.GetIndexer().GetByKey(key)
	if err != nil || !ok {
		return nil
	}
	t, _ := o.(*T)
	return t
}

func (c *Controller) render(comp *compiled, pod *corev1.Pod, ns *corev1.Namespace, agent spiffeid.ID) (store.Entry, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	data := v1alpha1.TemplateData{
		TrustDomain: c.cfg.TrustDomain.Name(), ClusterName: c.cfg.Cluster, Namespace: pod.Namespace,
		ServiceAccount: sa, PodName: pod.Name, PodUID: string(pod.UID), NodeName: pod.Spec.NodeName,
		PodLabels: pod.Labels, PodAnnotations: pod.Annotations, NamespaceLabels: ns.Labels,
	}
	exec := func(t *template.Template) (string, error) {
		var b bytes.Buffer
		if err := t.Execute(&b, data); err != nil {
			return "", fmt.Errorf("%s: %w", t.Name(), err)
		}
		return b.String(), nil
	}
	s, err := exec(comp.id)
	if err != nil {
		return store.Entry{}, err
	}
	id, err := spiffeid.FromString(s)
	if err != nil {
		return store.Entry{}, fmt.Errorf("spiffeIDTemplate gave %q: %w", s, err)
	}
	if id.TrustDomain() != c.cfg.TrustDomain {
		return store.Entry{}, fmt.Errorf("spiffeIDTemplate gave %s, outside the trust domain %s", id, c.cfg.TrustDomain.Name())
	}
	e := store.Entry{
		SPIFFEID: id, ParentID: agent, X509TTL: comp.ttl, JWTTTL: comp.jwtTTL, FederatesWith: comp.fed,
		Selectors: []attestation.Selector{
			{Type: "k8s", Key: "ns", Value: pod.Namespace},
			{Type: "k8s", Key: "sa", Value: sa},
			{Type: "k8s", Key: "pod-uid", Value: string(pod.UID)},
		},
	}
	for _, t := range comp.dns {
		d, err := exec(t)
		if err != nil {
			return store.Entry{}, err
		}
		if d != "" {
			e.DNSNames = append(e.DNSNames, d)
		}
	}
	if len(comp.labels) > 0 {
		e.Labels = map[string]string{}
		for k, t := range comp.labels {
			v, err := exec(t)
			if err != nil {
				return store.Entry{}, err
			}
			e.Labels[k] = v
		}
	}
	return e, nil
}

// sameEntry reports whether the stored entry have already is what want asks for.
func sameEntry(want, have store.Entry) bool {
	return want.SPIFFEID == have.SPIFFEID && want.ParentID == have.ParentID && want.X509TTL == have.X509TTL &&
		want.JWTTTL == have.JWTTTL && slices.Equal(want.DNSNames, have.DNSNames) && maps.Equal(want.Labels, have.Labels) &&
		slices.Equal(attestation.Strings(attestation.Normalize(slices.Clone(want.Selectors))), attestation.Strings(attestation.Normalize(slices.Clone(have.Selectors)))) &&
		len(have.NodeSelectors) == 0 && slices.Equal(want.FederatesWith, have.FederatesWith)
}

// IdentityStatus is what the controller knows of one KithIdentity.
type IdentityStatus struct {
	Name, Template       string
	PodsMatched, Entries int
	LastError            string
}

// Status returns what the controller knows of each KithIdentity, by name.
func (c *Controller) Status() []IdentityStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	counts := map[string]int{}
	for _, es := range c.entries {
		for _, e := range es {
			id, _, _ := parseSource(e.Source)
			counts[id]++
		}
	}
	var out []IdentityStatus
	for _, name := range slices.Sorted(maps.Keys(c.identities)) {
		comp := c.identities[name]
		st := IdentityStatus{Name: name, Template: comp.obj.Spec.SPIFFEIDTemplate, PodsMatched: len(c.matched[name]), Entries: counts[name]}
		if comp.err != nil {
			st.LastError = comp.err.Error()
		} else if em := c.errs[name]; len(em) > 0 {
			st.LastError = em[slices.Min(slices.Collect(maps.Keys(em)))]
			if len(em) > 1 {
				st.LastError += fmt.Sprintf(" (and %d more pods)", len(em)-1)
			}
		}
		out = append(out, st)
	}
	return out
}

func (c *Controller) statusWork(ctx context.Context) bool {
	name, quit := c.status.Get()
	if quit {
		return false
	}
	defer c.status.Done(name)
	if err := c.writeStatus(ctx, name); err != nil && !apierrors.IsNotFound(err) {
		c.log.Warn("kubernetes identities: write status", "identity", name, "err", err)
		c.status.AddAfter(name, 5*c.cfg.StatusDelay)
	}
	return true
}

func (c *Controller) writeStatus(ctx context.Context, name string) error {
	var st *IdentityStatus
	for _, s := range c.Status() {
		if s.Name == name {
			st = &s
		}
	}
	c.mu.Lock()
	comp := c.identities[name]
	c.mu.Unlock()
	if st == nil || comp == nil {
		return nil
	}
	old := comp.obj.Status
	next := v1alpha1.KithIdentityStatus{PodsMatched: int32(st.PodsMatched), Entries: int32(st.Entries), LastError: st.LastError,
		ObservedGeneration: comp.obj.Generation, Conditions: slices.Clone(old.Conditions)}
	cond := metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "EntriesKept",
		Message: fmt.Sprintf("%d entries for %d matching pods", st.Entries, st.PodsMatched), ObservedGeneration: comp.obj.Generation}
	if st.LastError != "" {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, "Invalid", st.LastError
	}
	meta.SetStatusCondition(&next.Conditions, cond)
	if next.PodsMatched == old.PodsMatched && next.Entries == old.Entries && next.LastError == old.LastError &&
		next.ObservedGeneration == old.ObservedGeneration && meta.IsStatusConditionPresentAndEqual(old.Conditions, cond.Type, cond.Status) &&
		meta.FindStatusCondition(old.Conditions, cond.Type).Message == cond.Message {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"status": next})
	if err != nil {
		return err
	}
	_, err = c.cfg.Dynamic.Resource(v1alpha1.KithIdentities).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "kith"}, "status")
	return err
}
