// Package apierr maps Kith's errors to gRPC status codes, once, at the API edge.
package apierr

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/internal/store"
)

// ErrInvalidArgument marks caller input that failed validation at the edge.
var ErrInvalidArgument = errors.New("invalid argument")

// ErrPermissionDenied marks a caller that is not allowed to do what it asked.
var ErrPermissionDenied = errors.New("permission denied")

// ErrUnavailable marks a condition the caller should retry later.
var ErrUnavailable = errors.New("unavailable")

// Invalid returns an InvalidArgument error with the given message.
func Invalid(msg string) error { return &wrapped{msg: msg, err: ErrInvalidArgument} }

// Denied returns a PermissionDenied error with the given message.
func Denied(msg string) error { return &wrapped{msg: msg, err: ErrPermissionDenied} }

type wrapped struct {
	msg string
	err error
}

func (w *wrapped) Error() string { return w.msg }
func (w *wrapped) Unwrap() error { return w.err }

// Code returns the gRPC code for err.
func Code(err error) codes.Code {
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		return s.Code()
	}
	switch {
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, ErrInvalidArgument), errors.Is(err, ca.ErrInvalidRequest):
		return codes.InvalidArgument
	case errors.Is(err, store.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, store.ErrAlreadyExists):
		return codes.AlreadyExists
	case errors.Is(err, store.ErrFailedPrecondition):
		return codes.FailedPrecondition
	case errors.Is(err, ErrPermissionDenied), errors.Is(err, store.ErrTokenInvalid):
		return codes.PermissionDenied
	case errors.Is(err, ErrUnavailable):
		return codes.Unavailable
	}
	return codes.Internal
}

// Status converts err to a gRPC status error. Internal errors are logged and returned with their message,
// since every API is already authenticated.
func Status(log *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		if s, _ := status.FromError(err); s.Code() != codes.Unknown {
			return err
		}
	}
	c := Code(err)
	if c == codes.Internal {
		log.Error("request failed", "method", method, "error", err)
	}
	return status.Error(c, err.Error())
}

// UnaryInterceptor maps returned errors to gRPC statuses.
func UnaryInterceptor(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		return resp, Status(log, info.FullMethod, err)
	}
}

// StreamInterceptor maps returned errors to gRPC statuses.
func StreamInterceptor(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return Status(log, info.FullMethod, h(srv, ss))
	}
}
