package hostside

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"sync"

	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/internal/chunk"
	pb "github.com/posthorn/posthorn/sdk/proto/posthorn/plugin/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// HostServer is what the host implements for a plugin's callbacks. Create
// one per plugin: the calls come from that plugin only. Methods are called
// concurrently.
type HostServer interface {
	// Submit queues a new message. It must read s.Body to the end, make the
	// message durable (fsync) and only then return its queue id. A known
	// s.IdempotencyKey returns the earlier queue id with Duplicate set and
	// queues nothing.
	Submit(ctx context.Context, s Submission) (SubmitResult, error)
	// Emit fans a plugin event out to subscribers. ev.SourcePlugin is
	// already set to Options.Name and ev.Type validated (dotted prefix).
	Emit(ctx context.Context, ev sdk.Event) error
	// Confirm settles a recipient the plugin diverted with pending = true.
	// The host must check that the recipient is pending for this plugin.
	Confirm(ctx context.Context, c sdk.Confirmation) error
}

// Submission is a message a plugin submits.
type Submission struct {
	IdempotencyKey string // never empty
	Envelope       *sdk.Envelope
	// Body streams the message; it fails with sdk.ErrMessageTooLarge beyond
	// Options.MaxMessageSize.
	Body io.Reader
}

// SubmitResult answers a Submission.
type SubmitResult struct {
	QueueID   string
	Duplicate bool // the key was known; nothing new was queued
}

// hostAdapter serves a HostServer as the gRPC Host service.
type hostAdapter struct {
	pb.UnimplementedHostServer
	name string
	log  *slog.Logger
	max  int64

	mu   sync.RWMutex
	impl HostServer
}

func newHostAdapter(name string, log *slog.Logger, impl HostServer, max int64) *hostAdapter {
	return &hostAdapter{name: name, log: log, impl: impl, max: max}
}

func (h *hostAdapter) set(impl HostServer) {
	h.mu.Lock()
	h.impl = impl
	h.mu.Unlock()
}

func (h *hostAdapter) get() HostServer {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.impl
}

// recoverPanic keeps a bug in the host's HostServer from taking the host
// down through a plugin callback.
func (h *hostAdapter) recoverPanic(method string, err *error) {
	if r := recover(); r != nil {
		h.log.Error("panic in HostServer", "method", method, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		*err = status.Errorf(codes.Internal, "host panic in %s", method)
	}
}

func hostStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, sdk.ErrMessageTooLarge):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, sdk.ErrUnknownRecipient):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, chunk.ErrTooBig):
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return status.Error(codes.Unknown, err.Error())
}

func (h *hostAdapter) Submit(stream pb.Host_SubmitServer) (err error) {
	defer h.recoverPanic("Submit", &err)
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	start := first.GetStart()
	switch {
	case start == nil:
		return status.Error(codes.InvalidArgument, "Submit: first message must be SubmitStart")
	case start.GetIdempotencyKey() == "":
		return status.Error(codes.InvalidArgument, "Submit: idempotency key required")
	case len(start.GetEnvelope().GetRecipients()) == 0:
		return status.Error(codes.InvalidArgument, "Submit: no recipients")
	}
	body := chunk.NewReader(func() ([]byte, error) {
		m, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		c, ok := m.GetMsg().(*pb.SubmitRequest_Chunk)
		if !ok {
			return nil, status.Error(codes.InvalidArgument, "Submit: SubmitStart after body")
		}
		return c.Chunk, nil
	}, h.max, sdk.ErrMessageTooLarge)
	res, err := h.get().Submit(stream.Context(), Submission{
		IdempotencyKey: start.GetIdempotencyKey(),
		Envelope:       envelopeFromPB(start.GetEnvelope()),
		Body:           body,
	})
	if err != nil {
		return hostStatus(err)
	}
	if body.Err() != io.EOF && !res.Duplicate {
		if n, _ := body.Read(make([]byte, 1)); n > 0 {
			h.log.Error("HostServer.Submit returned before reading the whole body", "queue_id", res.QueueID)
			return status.Error(codes.Internal, "Submit: host did not read the whole message")
		}
	}
	return stream.SendAndClose(&pb.SubmitResponse{QueueId: res.QueueID, Duplicate: res.Duplicate})
}

func (h *hostAdapter) Emit(ctx context.Context, req *pb.EmitRequest) (_ *pb.EmitResponse, err error) {
	defer h.recoverPanic("Emit", &err)
	if req.GetEvent() == nil {
		return nil, status.Error(codes.InvalidArgument, "Emit: no event")
	}
	ev := eventFromPB(req.GetEvent())
	ev.SourcePlugin = h.name
	if err := ev.ValidateEmitted(); err != nil {
		return nil, status.Error(codes.InvalidArgument, "Emit: "+err.Error())
	}
	if err := h.get().Emit(ctx, ev); err != nil {
		return nil, hostStatus(err)
	}
	return &pb.EmitResponse{}, nil
}

func (h *hostAdapter) Confirm(ctx context.Context, req *pb.ConfirmRequest) (_ *pb.ConfirmResponse, err error) {
	defer h.recoverPanic("Confirm", &err)
	c := sdk.Confirmation{
		QueueID:   req.GetQueueId(),
		Recipient: req.GetRecipient(),
		Outcome:   confirmOutcomeFromPB(req.GetOutcome()),
		Reason:    req.GetReason(),
	}
	if err := c.Validate(); err != nil {
		return nil, status.Error(codes.InvalidArgument, "Confirm: "+err.Error())
	}
	if err := h.get().Confirm(ctx, c); err != nil {
		return nil, hostStatus(err)
	}
	return &pb.ConfirmResponse{}, nil
}
