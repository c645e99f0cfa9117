package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/posthorn/posthorn/sdk/internal/chunk"
	pb "github.com/posthorn/posthorn/sdk/proto/posthorn/plugin/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// hostClient is the plugin's side of the Host service: one long-lived
// connection over the go-plugin broker, opened at Configure.
type hostClient struct {
	brokerID uint32
	conn     *grpc.ClientConn
	c        pb.HostClient
	maxSize  atomic.Int64
}

var _ Host = (*hostClient)(nil)

func newHostClient(id uint32, conn *grpc.ClientConn, maxSize int64) *hostClient {
	h := &hostClient{brokerID: id, conn: conn, c: pb.NewHostClient(conn)}
	h.maxSize.Store(maxSize)
	return h
}

func (h *hostClient) Submit(ctx context.Context, key string, env *Envelope, body io.Reader) (string, error) {
	switch {
	case key == "":
		return "", errors.New("sdk: Host.Submit needs an idempotency key")
	case env == nil || len(env.Recipients) == 0:
		return "", errors.New("sdk: Host.Submit needs an envelope with recipients")
	case body == nil:
		return "", errors.New("sdk: Host.Submit needs a body")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := h.c.Submit(ctx)
	if err != nil {
		return "", fmt.Errorf("sdk: Host.Submit: %w", err)
	}
	err = stream.Send(&pb.SubmitRequest{Msg: &pb.SubmitRequest_Start{Start: &pb.SubmitStart{
		Envelope:       envelopeToPB(env),
		IdempotencyKey: key,
	}}})
	if err == nil {
		_, err = chunk.Send(body, h.maxSize.Load(), ErrMessageTooLarge, func(b []byte) error {
			return stream.Send(&pb.SubmitRequest{Msg: &pb.SubmitRequest_Chunk{Chunk: b}})
		})
	}
	var se *chunk.SendError
	if err != nil && !errors.As(err, &se) {
		// Our side failed (body unreadable, too large): abort the call so
		// the host discards what it got.
		cancel()
		return "", fmt.Errorf("sdk: Host.Submit: %w", err)
	}
	// On a send error the host ended the stream; its reason comes with the
	// response.
	resp, err := stream.CloseAndRecv()
	if st, ok := status.FromError(err); ok && st.Code() == codes.NotFound {
		return "", fmt.Errorf("sdk: Host.Submit: %w: %s", ErrUnknownRecipient, st.Message())
	}
	if err != nil {
		return "", fmt.Errorf("sdk: Host.Submit: %w", err)
	}
	return resp.GetQueueId(), nil
}

func (h *hostClient) Emit(ctx context.Context, ev Event) error {
	if err := ev.ValidateEmitted(); err != nil {
		return fmt.Errorf("sdk: Host.Emit: %w", err)
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	ev.SourcePlugin = "" // the host sets it
	if _, err := h.c.Emit(ctx, &pb.EmitRequest{Event: eventToPB(ev)}); err != nil {
		return fmt.Errorf("sdk: Host.Emit: %w", err)
	}
	return nil
}

func (h *hostClient) Confirm(ctx context.Context, c Confirmation) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("sdk: Host.Confirm: %w", err)
	}
	_, err := h.c.Confirm(ctx, &pb.ConfirmRequest{
		QueueId:   c.QueueID,
		Recipient: c.Recipient,
		Outcome:   confirmOutcomeToPB[c.Outcome],
		Reason:    c.Reason,
	})
	if err != nil {
		return fmt.Errorf("sdk: Host.Confirm: %w", err)
	}
	return nil
}

// noHost is Config.Host when the host offers no host service.
type noHost struct{}

var _ Host = noHost{}

func (noHost) Submit(context.Context, string, *Envelope, io.Reader) (string, error) {
	return "", ErrNoHost
}
func (noHost) Emit(context.Context, Event) error           { return ErrNoHost }
func (noHost) Confirm(context.Context, Confirmation) error { return ErrNoHost }
