package sdk

import (
	"context"

	plugin "github.com/hashicorp/go-plugin"
	"github.com/posthorn/posthorn/sdk/internal/chunk"
	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
)

// Protocol constants shared by plugins (through Serve) and the host (through
// sdk/hostside). They are part of the wire contract: change them only with a
// new major protocol version.
const (
	// PluginName is the single go-plugin plugin name a Posthorn plugin
	// serves; the hook services are registered on its gRPC server.
	PluginName = "posthorn"

	// ProtocolVersion is the go-plugin handshake protocol version. It equals
	// the major version of the posthorn.plugin.v1 protobuf package.
	ProtocolVersion = 1

	// ProtocolMinor is the minor version of posthorn.plugin.v1 this SDK
	// implements. It grows with every additive change to plugin.proto and is
	// reported by Describe, so a host can tell which optional fields a
	// plugin knows.
	ProtocolMinor = 6

	// MaxChunkSize is the largest piece of message data carried by one gRPC
	// message. Both sides refuse bigger chunks.
	MaxChunkSize = chunk.Max

	// ChunkSize is the size of the chunks this SDK sends (just under
	// 256 KiB). Not a contract: a receiver takes any chunk up to
	// MaxChunkSize.
	ChunkSize = chunk.Size

	// MaxGRPCMessageSize is the receive and send limit set on every gRPC
	// server and client of the protocol (plugin server, host broker server).
	// Bodies are streamed in chunks, so this only bounds envelopes, verdicts
	// and events.
	MaxGRPCMessageSize = 16 << 20
)

// Handshake is the go-plugin handshake of Posthorn plugins. The cookie only
// keeps people from running a plugin binary by hand; it is not a secret.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "POSTHORN_PLUGIN",
	MagicCookieValue: "b7e0c4f2a91d5e3c8f6a0b2d4e1c9a7f3b5d8e0a2c4f6b1d",
}

// PluginMap returns the go-plugin plugin set a host passes to
// plugin.ClientConfig. Dispensing PluginName yields a value with the methods
// GRPCConn() *grpc.ClientConn and GRPCBroker() *plugin.GRPCBroker.
// sdk/hostside does all of this; use it instead of go-plugin directly.
func PluginMap() plugin.PluginSet {
	return plugin.PluginSet{PluginName: &goPlugin{}}
}

// goPlugin adapts a Plugin to go-plugin's GRPCPlugin. impl is nil on the
// host side.
type goPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	impl Plugin
}

var _ plugin.GRPCPlugin = (*goPlugin)(nil)

func (g *goPlugin) GRPCServer(broker *plugin.GRPCBroker, s *grpc.Server) error {
	registerServices(s, newServer(g.impl, broker, Logger()))
	return nil
}

func (g *goPlugin) GRPCClient(_ context.Context, broker *plugin.GRPCBroker, conn *grpc.ClientConn) (any, error) {
	return &pluginConn{conn: conn, broker: broker}, nil
}

// pluginConn is what the host dispenses.
type pluginConn struct {
	conn   *grpc.ClientConn
	broker *plugin.GRPCBroker
}

func (p *pluginConn) GRPCConn() *grpc.ClientConn     { return p.conn }
func (p *pluginConn) GRPCBroker() *plugin.GRPCBroker { return p.broker }

// GRPCServerOptions are the options every gRPC server of the protocol needs:
// go-plugin leaves the server side at gRPC's 4 MiB default.
// It also sets the protocol's buffer pool (see GRPCDialOptions).
func GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxGRPCMessageSize),
		grpc.MaxSendMsgSize(MaxGRPCMessageSize),
		experimental.BufferPool(chunk.GRPCPool),
		grpc.WriteBufferSize(ioBuffer),
		grpc.ReadBufferSize(ioBuffer),
		grpc.InitialWindowSize(window),
		grpc.InitialConnWindowSize(connWindow),
	}
}

// The connection between host and plugin is a local socket: reads and
// writes of a chunk at a time and flow-control windows that let a few
// chunks through without waiting for a window update (gRPC's defaults:
// 32 KiB buffers, 64 KiB windows growing by estimate). At most connWindow
// bytes wait unread on either side of a connection.
const (
	ioBuffer   = 256 << 10
	window     = 1 << 20
	connWindow = 4 << 20
)

// gRPC's protobuf codec marshals and gathers every message in buffers of
// the process's default pool, whatever pool a server or client was given:
// GRPCPool becomes the default in every process that uses the SDK (the
// host and each plugin), before any gRPC server or client exists.
func init() {
	experimental.SetDefaultBufferPool(chunk.GRPCPool)
}

// GRPCDialOptions are the options every gRPC client of the protocol uses
// (the host's connection to a plugin, a plugin's to the host): a buffer
// pool sized for body chunks that does not clear its buffers (gRPC's
// default cleared a 1 MiB buffer for every 100 KB chunk, issue 19.4).
func GRPCDialOptions() []grpc.DialOption {
	return []grpc.DialOption{experimental.WithBufferPool(chunk.GRPCPool),
		grpc.WithWriteBufferSize(ioBuffer),
		grpc.WithReadBufferSize(ioBuffer),
		grpc.WithInitialWindowSize(window),
		grpc.WithInitialConnWindowSize(connWindow),
	}
}
