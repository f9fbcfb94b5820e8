package k8spsat

import (
	"context"
	"fmt"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
)

// Client is a [Kube] over client-go REST clients of the two API groups it uses. It does not use the
// typed clientset: that registers every API group's types (tens of megabytes of binary) for three calls.
// Its credentials need: create tokenreviews, get pods, get nodes.
type Client struct {
	core, authn rest.Interface
}

var _ Kube = Client{}

// scheme knows the types the client sends and receives.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, authenticationv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	return s
}()

// NewClient makes a Client from a REST configuration.
func NewClient(rc *rest.Config) (Client, error) {
	mk := func(gv schema.GroupVersion, apiPath string) (rest.Interface, error) {
		c := rest.CopyConfig(rc)
		c.GroupVersion, c.APIPath = &gv, apiPath
		c.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
		if c.UserAgent == "" {
			c.UserAgent = rest.DefaultKubernetesUserAgent()
		}
		return rest.RESTClientFor(c)
	}
	core, err := mk(corev1.SchemeGroupVersion, "/api")
	if err != nil {
		return Client{}, err
	}
	authn, err := mk(authenticationv1.SchemeGroupVersion, "/apis")
	if err != nil {
		return Client{}, err
	}
	return Client{core: core, authn: authn}, nil
}

// ReviewToken creates a TokenReview.
func (c Client) ReviewToken(ctx context.Context, token string, audiences []string) (Review, error) {
	in := &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: audiences}}
	var tr authenticationv1.TokenReview
	if err := c.authn.Post().Resource("tokenreviews").Body(in).Do(ctx).Into(&tr); err != nil {
		return Review{}, err
	}
	st := tr.Status
	extra := make(map[string][]string, len(st.User.Extra))
	for k, v := range st.User.Extra {
		extra[k] = v
	}
	return Review{Authenticated: st.Authenticated, Error: st.Error, Username: st.User.Username, Extra: extra, Audiences: st.Audiences}, nil
}

// GetPod gets a pod.
func (c Client) GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	var p corev1.Pod
	if err := c.core.Get().Namespace(namespace).Resource("pods").Name(name).Do(ctx).Into(&p); err != nil {
		return nil, notFound(err)
	}
	return &p, nil
}

// GetNode gets a node.
func (c Client) GetNode(ctx context.Context, name string) (*corev1.Node, error) {
	var n corev1.Node
	if err := c.core.Get().Resource("nodes").Name(name).Do(ctx).Into(&n); err != nil {
		return nil, notFound(err)
	}
	return &n, nil
}

func notFound(err error) error {
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return err
}
