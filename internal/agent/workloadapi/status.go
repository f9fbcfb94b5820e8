package workloadapi

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// apiError is an error with the gRPC code it is answered with. Handlers return plain Go errors;
// toStatus turns them into gRPC statuses in one place.
type apiError struct {
	code codes.Code
	err  error
}

func (e *apiError) Error() string { return e.err.Error() }
func (e *apiError) Unwrap() error { return e.err }

func codeErrorf(code codes.Code, format string, args ...any) error {
	return &apiError{code: code, err: fmt.Errorf(format, args...)}
}

var (
	errMissingHeader = &apiError{codes.InvalidArgument, errors.New("security header missing from request")}
	errNoCredentials = &apiError{codes.Internal, errors.New("no unix peer credentials on the connection: the workload api must be served with peer.TransportCredentials")}
	errNotReady      = &apiError{codes.Unavailable, errors.New("agent has no identities yet")}
	errNoIdentity    = &apiError{codes.PermissionDenied, errors.New("no identity issued")}
)

// toStatus maps an error returned by a handler to a gRPC status error. Statuses pass through
// unchanged (stream send errors); context errors become Canceled or DeadlineExceeded; anything
// unexpected is Internal.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return status.Error(ae.code, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Internal, err.Error())
}
