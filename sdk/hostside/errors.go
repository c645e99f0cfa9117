package hostside

import (
	"context"
	"errors"
	"fmt"

	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/internal/chunk"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var (
	// ErrUnavailable: the plugin process is gone or its connection broke.
	// Kill the client and Dial a new one.
	ErrUnavailable = errors.New("plugin unavailable")
	// ErrNotImplemented: the plugin does not serve this hook.
	ErrNotImplemented = errors.New("hook not implemented by plugin")
	// ErrProtocol: the plugin broke the protocol (an invalid verdict,
	// output for a recipient not in the group, an oversized chunk…).
	ErrProtocol = errors.New("plugin protocol violation")
)

// Error is the error of every Client call. Err is one of the sentinels
// above, sdk.ErrMessageTooLarge, a context error, a *sdk.ConfigError or a
// *RemoteError.
type Error struct {
	Plugin string // Options.Name
	Method string // "Inspect", "Transform"…
	Err    error
}

func (e *Error) Error() string { return fmt.Sprintf("plugin %s: %s: %v", e.Plugin, e.Method, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

// RemoteError is an error the plugin returned (including a recovered panic
// in its handler): the plugin is alive, the call failed.
type RemoteError struct {
	Code    codes.Code
	Message string
}

func (e *RemoteError) Error() string { return e.Message }

// wrap classifies err. The caller's ctx decides whether a cancellation was
// ours.
func (c *Client) wrap(ctx context.Context, method string, err error) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	return &Error{Plugin: c.name, Method: method, Err: classify(ctx, err, c.pc.Exited())}
}

func classify(ctx context.Context, err error, exited bool) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	switch {
	case errors.Is(err, sdk.ErrMessageTooLarge), errors.Is(err, ErrProtocol),
		errors.Is(err, ErrUnavailable), errors.Is(err, ErrNotImplemented):
		return err
	case errors.Is(err, chunk.ErrTooBig):
		return fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	st, ok := status.FromError(err)
	if !ok {
		if exited {
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		return err
	}
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Errorf("%w: %s", ErrUnavailable, st.Message())
	case codes.Unimplemented:
		return ErrNotImplemented
	case codes.DeadlineExceeded:
		return context.DeadlineExceeded
	case codes.Canceled:
		if exited {
			return ErrUnavailable
		}
		return context.Canceled
	case codes.ResourceExhausted:
		return fmt.Errorf("%w: %s", sdk.ErrMessageTooLarge, st.Message())
	}
	return &RemoteError{Code: st.Code(), Message: st.Message()}
}
