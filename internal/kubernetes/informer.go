package kubernetes

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
)

// NewInformer is a shared informer of one resource over the dynamic client (cluster-wide), indexed by
// namespace. transform, when set, turns each unstructured object into what the cache keeps (a stripped
// typed object): it is the informer's transform. It uses neither client-go's clientset nor its informer
// factories, which link every API group into the binary.
func NewInformer(dyn dynamic.Interface, gvr schema.GroupVersionResource, resync time.Duration, transform cache.TransformFunc) (cache.SharedIndexInformer, error) {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return dyn.Resource(gvr).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return dyn.Resource(gvr).Watch(ctx, o)
		},
	}
	inf := cache.NewSharedIndexInformer(lw, &unstructured.Unstructured{}, resync, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	if transform != nil {
		if err := inf.SetTransform(transform); err != nil {
			return nil, err
		}
	}
	return inf, nil
}

// Typed converts an unstructured object into a typed one of T, for informer transforms.
func Typed[T any](o any) (*T, bool) {
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		t, ok := o.(*T)
		return t, ok
	}
	var t T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.UnstructuredContent(), &t); err != nil {
		return nil, false
	}
	return &t, true
}
