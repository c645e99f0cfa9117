package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime/debug"
	"sync"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"github.com/posthorn/posthorn/sdk/internal/bodyfile"
	"github.com/posthorn/posthorn/sdk/internal/chunk"
	pb "github.com/posthorn/posthorn/sdk/proto/posthorn/plugin/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// server is the plugin side of the protocol: it adapts the plain-Go hooks
// to the generated gRPC services.
type server struct {
	impl   Plugin
	desc   Description
	hooks  []Hook
	broker *plugin.GRPCBroker
	log    hclog.Logger
	// files is the body channel the host handed us (protocol minor 5),
	// nil without one.
	files *bodyfile.Channel

	mu      sync.Mutex
	host    *hostClient // nil until Configure with a broker id
	hostMax int64       // host's limit from Configure
}

func newServer(impl Plugin, broker *plugin.GRPCBroker, log hclog.Logger) *server {
	return &server{impl: impl, desc: impl.Describe(), hooks: hooksOf(impl), broker: broker, log: log, files: bodyChannel()}
}

// registerServices registers Plugin and the implemented hook services.
func registerServices(s *grpc.Server, srv *server) {
	pb.RegisterPluginServer(s, &pluginServer{srv: srv})
	if h, ok := srv.impl.(InboundHook); ok {
		pb.RegisterInboundServer(s, &inboundServer{srv: srv, hook: h})
	}
	if h, ok := srv.impl.(OutboundHook); ok {
		pb.RegisterOutboundServer(s, &outboundServer{srv: srv, hook: h})
	}
	if h, ok := srv.impl.(EventHook); ok {
		pb.RegisterEventsServer(s, &eventsServer{srv: srv, hook: h})
	}
}

// recoverPanic turns a panic in plugin code into an error result. Deferred
// by every handler, so a panicking hook fails one call, not the plugin.
func (s *server) recoverPanic(method string, err *error) {
	if r := recover(); r != nil {
		s.log.Error("panic in plugin handler", "method", method, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		*err = status.Errorf(codes.Internal, "plugin panic in %s: %v", method, r)
	}
}

// toStatus maps an error returned by plugin code to a gRPC status.
func toStatus(method string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Unknown
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, ErrMessageTooLarge):
		code = codes.ResourceExhausted
	case errors.Is(err, chunk.ErrTooBig):
		code = codes.InvalidArgument
	}
	return status.Errorf(code, "%s: %v", method, err)
}

func (s *server) limits() (in, out int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.desc.MaxMessageSize, s.hostMax
}

// ---------------------------------------------------------------------------

type pluginServer struct {
	pb.UnimplementedPluginServer
	srv *server
}

func (p *pluginServer) Describe(context.Context, *pb.DescribeRequest) (_ *pb.DescribeResponse, err error) {
	defer p.srv.recoverPanic("Describe", &err)
	d := p.srv.desc
	resp := &pb.DescribeResponse{
		Name:          d.Name,
		Version:       d.Version,
		Hooks:         hooksToPB(p.srv.hooks),
		ProtocolMinor: ProtocolMinor,
		EventTypes:    d.EventTypes,
		InboundFilter: inboundFilterToPB(d.InboundFilter),
		BodyFiles:     p.srv.files != nil,
	}
	if d.MaxMessageSize > 0 {
		resp.MaxMessageSize = uint64(d.MaxMessageSize)
	}
	return resp, nil
}

func (p *pluginServer) Configure(ctx context.Context, req *pb.ConfigureRequest) (_ *pb.ConfigureResponse, err error) {
	defer p.srv.recoverPanic("Configure", &err)
	s := p.srv
	hostMax := int64(req.GetMaxMessageSize())
	if hostMax < 0 {
		hostMax = 0
	}
	var host Host = noHost{}
	if id := req.GetHostBrokerId(); id != 0 {
		hc, err := s.dialHost(id, hostMax)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "dialling host service (broker id %d): %v", id, err)
		}
		host = hc
	}
	s.mu.Lock()
	s.hostMax = hostMax
	s.mu.Unlock()

	cfg := Config{JSON: req.GetConfigJson(), DataDir: req.GetDataDir(), MaxMessageSize: hostMax, Host: host,
		DNSResolver: req.GetDnsResolver()}
	if d := req.GetDatabase(); d != nil && d.GetDsn() != "" {
		cfg.Database = &Database{DSN: d.GetDsn(), MaxConns: int(d.GetMaxConns()), TLS: d.GetTls(), CAFile: d.GetCaFile()}
	}
	if len(cfg.JSON) == 0 {
		cfg.JSON = []byte("{}")
	}
	if err := s.impl.Configure(ctx, cfg); err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			return &pb.ConfigureResponse{Error: &pb.ConfigError{Message: ce.Message, Key: ce.Key}}, nil
		}
		return &pb.ConfigureResponse{Error: &pb.ConfigError{Message: err.Error()}}, nil
	}
	resp := &pb.ConfigureResponse{}
	if ff, ok := s.impl.(InboundFilterer); ok {
		f := ff.InboundFilter()
		if err := f.Validate(); err != nil {
			return &pb.ConfigureResponse{Error: &pb.ConfigError{Message: err.Error()}}, nil
		}
		resp.InboundFilter = inboundFilterToPB(f)
	}
	return resp, nil
}

// dialHost opens (once per broker id) the long-lived connection to the
// host's Host service.
func (s *server) dialHost(id uint32, maxSize int64) (*hostClient, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.host != nil && s.host.brokerID == id {
		s.host.maxSize.Store(maxSize)
		return s.host, nil
	}
	conn, err := s.broker.DialWithOptions(id, append(GRPCDialOptions(), grpc.WithDefaultCallOptions(
		grpc.MaxCallRecvMsgSize(MaxGRPCMessageSize),
		grpc.MaxCallSendMsgSize(MaxGRPCMessageSize)))...)
	if err != nil {
		return nil, err
	}
	if s.host != nil {
		_ = s.host.conn.Close()
	}
	s.host = newHostClient(id, conn, maxSize)
	return s.host, nil
}

// ---------------------------------------------------------------------------

type inboundServer struct {
	pb.UnimplementedInboundServer
	srv  *server
	hook InboundHook
}

func (i *inboundServer) Inspect(stream pb.Inbound_InspectServer) (err error) {
	defer i.srv.recoverPanic("Inspect", &err)
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	penv := first.GetEnvelope()
	if penv == nil {
		return status.Error(codes.InvalidArgument, "Inspect: first message must be the envelope")
	}
	maxIn, maxOut := i.srv.limits()
	body := chunk.NewReader(func() ([]byte, error) {
		m, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		c, ok := m.GetMsg().(*pb.InspectRequest_Chunk)
		if !ok {
			return nil, status.Error(codes.InvalidArgument, "Inspect: envelope after body")
		}
		return c.Chunk, nil
	}, maxIn, ErrMessageTooLarge)

	v, err := i.hook.Inspect(stream.Context(), envelopeFromPB(penv), body)
	if c, ok := v.Replacement.(io.Closer); ok {
		defer c.Close()
	}
	if err != nil {
		return toStatus("Inspect", err)
	}
	if err := v.Validate(); err != nil {
		return status.Errorf(codes.Internal, "Inspect returned an invalid verdict: %v", err)
	}
	if v.Action == ActionReplace && v.Replacement == nil {
		return status.Error(codes.Internal, "Inspect returned a replace verdict without a replacement")
	}
	if err := stream.Send(&pb.InspectResponse{Msg: &pb.InspectResponse_Verdict{Verdict: verdictToPB(v)}}); err != nil {
		return err
	}
	if v.Action != ActionReplace {
		return nil
	}
	_, err = chunk.Send(v.Replacement, maxOut, ErrMessageTooLarge, func(b []byte) error {
		return stream.Send(&pb.InspectResponse{Msg: &pb.InspectResponse_Chunk{Chunk: b}})
	})
	return toStatus("Inspect: replacement", err)
}

// ---------------------------------------------------------------------------

type outboundServer struct {
	pb.UnimplementedOutboundServer
	srv  *server
	hook OutboundHook
}

func (o *outboundServer) CanHandle(ctx context.Context, req *pb.CanHandleRequest) (_ *pb.CanHandleResponse, err error) {
	defer o.srv.recoverPanic("CanHandle", &err)
	if req.GetPurpose() == pb.Purpose_PURPOSE_SIGN {
		ctx = WithSignOnly(ctx)
	}
	answers, err := o.answer(ctx, envelopeFromPB(req.GetEnvelope()), recipientsFromPB(req.GetRecipients()))
	if err != nil {
		return nil, err
	}
	return &pb.CanHandleResponse{Answers: answers}, nil
}

// answer asks the hook's CanHandle: one answer per recipient, in order
// (a recipient the hook left out: cannot); an answer for a recipient not
// asked is an error.
func (o *outboundServer) answer(ctx context.Context, env *Envelope, rcpts []Recipient) ([]*pb.RecipientAnswer, error) {
	answers, err := o.hook.CanHandle(ctx, env, rcpts)
	if err != nil {
		return nil, toStatus("CanHandle", err)
	}
	byAddr := make(map[string]Answer, len(answers))
	for _, a := range answers {
		byAddr[a.Recipient] = a
	}
	out := make([]*pb.RecipientAnswer, 0, len(rcpts))
	for _, r := range rcpts {
		a, ok := byAddr[r.Address]
		if !ok {
			a = Answer{Recipient: r.Address, Reason: "no answer from plugin"}
		}
		delete(byAddr, r.Address)
		out = append(out, &pb.RecipientAnswer{Recipient: r.Address, CanHandle: a.CanHandle, Reason: a.Reason})
	}
	for addr := range byAddr {
		return nil, status.Errorf(codes.Internal, "CanHandle answered for %q, which was not asked", addr)
	}
	return out, nil
}

func (o *outboundServer) Transform(stream pb.Outbound_TransformServer) (err error) {
	defer o.srv.recoverPanic("Transform", &err)
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	start := first.GetStart()
	if start == nil {
		return status.Error(codes.InvalidArgument, "Transform: first message must be TransformStart")
	}
	group := recipientsFromPB(start.GetRecipients())
	if len(group) == 0 {
		return status.Error(codes.InvalidArgument, "Transform: empty recipient group")
	}
	maxIn, maxOut := o.srv.limits()
	tctx := stream.Context()
	var body io.Reader
	byFile := start.GetBodyFile() != 0
	if byFile {
		f, err := o.srv.takeBody(tctx, start.GetBodyFile(), start.GetBodySize(), maxIn)
		if err != nil {
			return toStatus("Transform", err)
		}
		defer f.Close()
		body = bodyfile.Reader(f, int64(start.GetBodySize()))
	} else {
		body = chunk.NewReader(func() ([]byte, error) {
			m, err := stream.Recv()
			if err != nil {
				return nil, err
			}
			c, ok := m.GetMsg().(*pb.TransformRequest_Chunk)
			if !ok {
				return nil, status.Error(codes.InvalidArgument, "Transform: TransformStart after body")
			}
			return c.Chunk, nil
		}, maxIn, ErrMessageTooLarge)
	}

	if start.GetPurpose() == pb.Purpose_PURPOSE_SIGN {
		tctx = WithSignOnly(tctx)
	}
	env := envelopeFromPB(start.GetEnvelope())
	var answers []*pb.RecipientAnswer
	if start.GetDecide() {
		// Minor 6: CanHandle first, then Transform for those it can.
		if answers, err = o.answer(tctx, env, group); err != nil {
			return err
		}
		var can []Recipient
		for i, a := range answers {
			if a.GetCanHandle() {
				can = append(can, group[i])
			}
		}
		if len(can) == 0 {
			return stream.Send(&pb.TransformResponse{Msg: &pb.TransformResponse_Result{Result: &pb.TransformResult{
				Action:  pb.TransformResult_ACTION_DECLINED,
				Reason:  "no recipient can be handled",
				Answers: answers,
			}}})
		}
		group = can
	}
	res, err := o.hook.Transform(tctx, env, group, body)
	for _, out := range res.Outputs {
		if c, ok := out.Body.(io.Closer); ok {
			defer c.Close()
		}
	}
	if err != nil {
		return toStatus("Transform", err)
	}
	if err := res.Validate(group); err != nil {
		return status.Errorf(codes.Internal, "Transform returned an invalid result: %v", err)
	}
	err = stream.Send(&pb.TransformResponse{Msg: &pb.TransformResponse_Result{Result: &pb.TransformResult{
		Action:  outboundActionToPB[res.Action],
		Pending: res.Pending,
		Reason:  res.Reason,
		Outputs: uint32(len(res.Outputs)),
		Answers: answers,
	}}})
	if err != nil {
		return err
	}
	for i, out := range res.Outputs {
		if byFile {
			if err := o.sendOutputFile(stream, out, bodyfile.OutputToken(start.GetBodyFile(), i), maxOut); err != nil {
				return toStatus(fmt.Sprintf("Transform: output %d", i), err)
			}
			continue
		}
		err := stream.Send(&pb.TransformResponse{Msg: &pb.TransformResponse_Output{Output: &pb.OutputHeader{Recipients: out.Recipients}}})
		if err != nil {
			return err
		}
		_, err = chunk.Send(out.Body, maxOut, ErrMessageTooLarge, func(b []byte) error {
			return stream.Send(&pb.TransformResponse{Msg: &pb.TransformResponse_Chunk{Chunk: b}})
		})
		if err != nil {
			return toStatus(fmt.Sprintf("Transform: output %d", i), err)
		}
	}
	return nil
}

// takeBody takes the body file the host announced (minor 5) and checks it:
// sealed, of the announced size, within our limit.
func (s *server) takeBody(ctx context.Context, token, size uint64, limit int64) (*os.File, error) {
	if s.files == nil {
		return nil, status.Error(codes.FailedPrecondition, "Transform: body file announced, but this plugin has no body channel")
	}
	if size > math.MaxInt64 {
		return nil, ErrMessageTooLarge
	}
	f, err := s.files.Take(ctx, token)
	if err != nil {
		return nil, err
	}
	if err := bodyfile.Check(f, int64(size), limit, ErrMessageTooLarge); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// sendOutputFile passes one output as a sealed memory file under token
// (the host sent its body that way, so it takes outputs that way too).
func (o *outboundServer) sendOutputFile(stream pb.Outbound_TransformServer, out Output, token uint64, limit int64) error {
	f, n, err := bodyfile.Create(out.Body, limit, ErrMessageTooLarge)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := stream.Context().Err(); err != nil {
		return err // the host gave up on the call: nobody would take it
	}
	if err := o.srv.files.SendAs(token, f); err != nil {
		return err
	}
	return stream.Send(&pb.TransformResponse{Msg: &pb.TransformResponse_Output{Output: &pb.OutputHeader{
		Recipients: out.Recipients, BodyFile: token, BodySize: uint64(n),
	}}})
}

// ---------------------------------------------------------------------------

type eventsServer struct {
	pb.UnimplementedEventsServer
	srv  *server
	hook EventHook
}

func (e *eventsServer) Deliver(ctx context.Context, req *pb.DeliverRequest) (_ *pb.DeliverResponse, err error) {
	defer e.srv.recoverPanic("Deliver", &err)
	if req.GetEvent() == nil {
		return nil, status.Error(codes.InvalidArgument, "Deliver: no event")
	}
	if err := e.hook.HandleEvent(ctx, eventFromPB(req.GetEvent())); err != nil {
		return nil, toStatus("HandleEvent", err)
	}
	return &pb.DeliverResponse{}, nil
}
