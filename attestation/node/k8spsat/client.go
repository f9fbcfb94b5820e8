package k8spsat

import (
	"context"
	"fmt"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Client is a [Kube] over client-go. Its credentials need: create tokenreviews, get pods, get nodes.
type Client struct{ Interface kubernetes.Interface }

var _ Kube = Client{}

// ReviewToken creates a TokenReview.
func (c Client) ReviewToken(ctx context.Context, token string, audiences []string) (Review, error) {
	tr, err := c.Interface.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: audiences},
	}, metav1.CreateOptions{})
	if err != nil {
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
	p, err := c.Interface.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	return p, notFound(err)
}

// GetNode gets a node.
func (c Client) GetNode(ctx context.Context, name string) (*corev1.Node, error) {
	n, err := c.Interface.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	return n, notFound(err)
}

func notFound(err error) error {
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return err
}
