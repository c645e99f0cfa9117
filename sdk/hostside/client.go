// Package hostside is the host's half of the Posthorn plugin protocol: it
// starts a plugin binary with go-plugin and offers its hooks as typed Go
// methods, and it serves the Host service (Submit, Emit, Confirm) to the
// plugin over the go-plugin broker.
//
// One Client is one plugin process. go-plugin cannot restart a process:
// when Exited reports true (or calls fail with ErrUnavailable), Kill the
// client and Dial a new one — that is the supervisor's job.
//
//	c, err := hostside.Dial("/usr/lib/posthorn/smime", hostside.Options{Name: "smime", SHA256: sum, Logger: log})
//	info, err := c.Describe(ctx)
//	err = c.Configure(ctx, cfgJSON, dataDir, myHostServer)
//	v, replacement, err := c.Inspect(ctx, env, body)
//
// Every call takes a context; give each one the plugin's timeout. A call
// returns promptly when its context ends or the plugin dies, with an
// *Error wrapping the context's error, ErrUnavailable, ErrNotImplemented,
// ErrProtocol, sdk.ErrMessageTooLarge or a *RemoteError (the plugin
// returned an error or panicked).
package hostside

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	plugin "github.com/hashicorp/go-plugin"
	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/internal/bodyfile"
	pb "github.com/posthorn/posthorn/sdk/proto/posthorn/plugin/v1"
	"google.golang.org/grpc"
)

// Options configure Dial.
type Options struct {
	// Name is the plugin's name in the host configuration ([[plugin]]
	// name). It labels log lines and errors and is stamped as
	// SourcePlugin on every event the plugin emits.
	Name string
	// SHA256 is the expected hex SHA-256 of the binary; checked before
	// start when set.
	SHA256 string
	// Logger receives the plugin's log lines (its stderr) and go-plugin's
	// own messages. nil: discarded.
	Logger *slog.Logger
	// Args and Env are extra arguments and environment entries
	// ("KEY=value") for the plugin process. The host's environment is
	// inherited.
	Args []string
	Env  []string
	// StartTimeout bounds the handshake. Default 10s.
	StartTimeout time.Duration
	// MaxMessageSize is the largest message the host accepts from the
	// plugin (replacements, transformed outputs, Submit). 0: no limit.
	MaxMessageSize int64
	// Database is the shared database handed to the plugin at Configure
	// (protocol minor 3); nil: none.
	Database *sdk.Database
	// SocketDir is where the plugin creates its unix sockets. Socket paths
	// longer than ~104 bytes fail, so keep it short. Default: the plugin's
	// os.TempDir().
	SocketDir string
	// DNSResolver is the host's resolver ("HOST:PORT"), handed to the
	// plugin at Configure (sdk.Config.DNSResolver). Empty: the system's.
	DNSResolver string
	// NoBodyFiles keeps Transform bodies in gRPC chunks even when the
	// plugin could take them as sealed memory files (protocol minor 5,
	// Linux). Off platforms without memfd this is always so.
	NoBodyFiles bool
	// NoDecide makes TransformDecide ask CanHandle and Transform in two
	// calls even when the plugin could do both in one (protocol minor 6),
	// as with an older plugin.
	NoDecide bool
}

// Client is a running plugin. Its methods are safe for concurrent use.
type Client struct {
	name string
	opts Options
	log  *slog.Logger
	pc   *plugin.Client

	conn     *grpc.ClientConn
	broker   *plugin.GRPCBroker
	plugin   pb.PluginClient
	inbound  pb.InboundClient
	outbound pb.OutboundClient
	events   pb.EventsClient

	mu        sync.Mutex
	info      *Info
	filter    *sdk.InboundFilter // from the last Configure; nil: the Description's
	hostID    uint32
	hostSrv   *hostAdapter
	pluginMax int64

	// files is the body channel to the plugin (nil: none); bodyFiles is
	// set once Describe said the plugin took it over.
	files     *bodyfile.Channel
	bodyFiles atomic.Bool
}

// dispensed is what sdk.PluginMap's GRPCClient returns.
type dispensed interface {
	GRPCConn() *grpc.ClientConn
	GRPCBroker() *plugin.GRPCBroker
}

// Dial starts the plugin binary at path and completes the handshake. The
// process is managed: KillAll stops every plugin still running.
func Dial(path string, opts Options) (*Client, error) {
	if opts.Name == "" {
		opts.Name = path
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 10 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("plugin", opts.Name)

	var secure *plugin.SecureConfig
	if opts.SHA256 != "" {
		sum, err := hex.DecodeString(opts.SHA256)
		if err != nil || len(sum) != sha256.Size {
			return nil, fmt.Errorf("plugin %s: sha256 %q is not a hex SHA-256", opts.Name, opts.SHA256)
		}
		secure = &plugin.SecureConfig{Checksum: sum, Hash: sha256.New()}
	}

	cmd := exec.Command(path, opts.Args...)
	// The environment is built here (SkipHostEnv below) so that our
	// entries win over the host's.
	cmd.Env = append(os.Environ(), opts.Env...)
	cmd.Env = append(cmd.Env, sdk.EnvLogLevel+"="+levelOf(log))
	if opts.SocketDir != "" {
		cmd.Env = append(cmd.Env, "PLUGIN_UNIX_SOCKET_DIR="+opts.SocketDir)
	}
	// The body channel: the plugin inherits its end as descriptor 3 (the
	// first of ExtraFiles) and announces in Describe whether it uses it.
	var files *bodyfile.Channel
	if !opts.NoBodyFiles && bodyfile.Supported {
		ch, child, err := bodyfile.Pair()
		if err != nil {
			log.Warn("no body channel for the plugin; bodies travel in chunks", "err", err)
		} else {
			files = ch
			cmd.ExtraFiles = []*os.File{child}
			cmd.Env = append(cmd.Env, bodyfile.EnvFD+"=3")
			defer child.Close() // the plugin has its own copy once started
		}
	}
	closeFiles := func() {
		if files != nil {
			files.Close()
		}
	}

	hl := newHCLogger(log, opts.Name)
	pc := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		Plugins:          sdk.PluginMap(),
		Cmd:              cmd,
		SecureConfig:     secure,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		GRPCDialOptions:  sdk.GRPCDialOptions(),
		Managed:          true,
		SkipHostEnv:      true,
		StartTimeout:     opts.StartTimeout,
		Logger:           hl,
		SyncStdout:       newLineWriter(log, slog.LevelWarn, "plugin wrote to stdout (plugins must log with sdk.Logger)"),
		SyncStderr:       newLineWriter(log, slog.LevelInfo, "plugin stderr"),
		// Long log lines (stack traces of a recovered panic) stay whole.
		PluginLogBufferSize: 1 << 20,
	})
	rpc, err := pc.Client()
	if err != nil {
		pc.Kill()
		closeFiles()
		if errors.Is(err, plugin.ErrChecksumsDoNotMatch) {
			return nil, fmt.Errorf("plugin %s: %s: checksum does not match the configured sha256", opts.Name, path)
		}
		return nil, fmt.Errorf("plugin %s: starting %s: %w", opts.Name, path, err)
	}
	raw, err := rpc.Dispense(sdk.PluginName)
	if err != nil {
		pc.Kill()
		closeFiles()
		return nil, fmt.Errorf("plugin %s: %w", opts.Name, err)
	}
	d, ok := raw.(dispensed)
	if !ok {
		pc.Kill()
		closeFiles()
		return nil, fmt.Errorf("plugin %s: unexpected dispensed type %T", opts.Name, raw)
	}
	conn := d.GRPCConn()
	return &Client{
		name:     opts.Name,
		opts:     opts,
		log:      log,
		pc:       pc,
		conn:     conn,
		broker:   d.GRPCBroker(),
		plugin:   pb.NewPluginClient(conn),
		inbound:  pb.NewInboundClient(conn),
		outbound: pb.NewOutboundClient(conn),
		events:   pb.NewEventsClient(conn),
		files:    files,
	}, nil
}

// KillAll kills every plugin process started by Dial that is still running.
// Call it on host shutdown (defer it in main).
func KillAll() { plugin.CleanupClients() }

// Name returns Options.Name.
func (c *Client) Name() string { return c.name }

// Kill stops the plugin: a graceful shutdown request, then SIGKILL after two
// seconds. It blocks until the process is gone and may be called more than
// once.
func (c *Client) Kill() {
	c.pc.Kill()
	if c.files != nil {
		c.files.Close()
	}
}

// Exited reports whether the plugin process has exited.
func (c *Client) Exited() bool { return c.pc.Exited() }

// Pid returns the plugin's process id (0 when unknown).
func (c *Client) Pid() int {
	if rc := c.pc.ReattachConfig(); rc != nil {
		return rc.Pid
	}
	return 0
}

// Ping checks that the plugin answers.
func (c *Client) Ping() error {
	rpc, err := c.pc.Client()
	if err != nil {
		return c.wrap(context.Background(), "Ping", err)
	}
	if err := rpc.Ping(); err != nil {
		return c.wrap(context.Background(), "Ping", err)
	}
	return nil
}

// Info is what a plugin says about itself.
type Info struct {
	sdk.Description
	// Hooks the plugin serves.
	Hooks []sdk.Hook
	// ProtocolMinor is the posthorn.plugin.v1 minor version the plugin was
	// built against; fields added after it are unknown to the plugin.
	ProtocolMinor uint32
	// BodyFiles: the plugin took over the body channel and takes
	// Transform bodies as sealed memory files (minor 5).
	BodyFiles bool
}

// Has reports whether the plugin serves hook h.
func (i *Info) Has(h sdk.Hook) bool {
	for _, x := range i.Hooks {
		if x == h {
			return true
		}
	}
	return false
}

// Describe asks the plugin who it is. The answer is validated and cached
// (the plugin's MaxMessageSize is enforced on bodies sent to it).
func (c *Client) Describe(ctx context.Context) (*Info, error) {
	resp, err := c.plugin.Describe(ctx, &pb.DescribeRequest{HostProtocolMinor: sdk.ProtocolMinor})
	if err != nil {
		return nil, c.wrap(ctx, "Describe", err)
	}
	info := infoFromPB(resp)
	if err := info.Validate(); err != nil {
		return nil, c.wrap(ctx, "Describe", fmt.Errorf("%w: %v", ErrProtocol, err))
	}
	c.mu.Lock()
	c.info = info
	c.pluginMax = info.MaxMessageSize
	c.mu.Unlock()
	c.bodyFiles.Store(info.BodyFiles && c.files != nil)
	return info, nil
}

// Configure hands the plugin its configuration: cfgJSON is its
// [plugin.config] table as a JSON object (nil: "{}"), dataDir a directory
// it owns. host, when not nil, is served to the plugin over the broker for
// as long as the plugin runs; a later Configure may swap it. A
// configuration the plugin rejects yields an error wrapping a
// *sdk.ConfigError (errors.As).
func (c *Client) Configure(ctx context.Context, cfgJSON []byte, dataDir string, host HostServer) error {
	if len(cfgJSON) == 0 {
		cfgJSON = []byte("{}")
	}
	var obj map[string]any
	if err := json.Unmarshal(cfgJSON, &obj); err != nil || obj == nil {
		return fmt.Errorf("plugin %s: Configure: config is not a JSON object", c.name)
	}
	var id uint32
	if host != nil {
		id = c.serveHost(host)
	}
	req := &pb.ConfigureRequest{
		ConfigJson:        cfgJSON,
		DataDir:           dataDir,
		HostBrokerId:      id,
		HostProtocolMinor: sdk.ProtocolMinor,
		DnsResolver:       c.opts.DNSResolver,
	}
	if c.opts.MaxMessageSize > 0 {
		req.MaxMessageSize = uint64(c.opts.MaxMessageSize)
	}
	if d := c.opts.Database; d != nil && d.DSN != "" {
		req.Database = &pb.Database{Dsn: d.DSN, MaxConns: uint32(max(d.MaxConns, 0)), Tls: d.TLS, CaFile: d.CAFile}
	}
	resp, err := c.plugin.Configure(ctx, req)
	if err != nil {
		return c.wrap(ctx, "Configure", err)
	}
	if e := resp.GetError(); e != nil {
		return &Error{Plugin: c.name, Method: "Configure", Err: &sdk.ConfigError{Key: e.GetKey(), Message: e.GetMessage()}}
	}
	if pf := resp.GetInboundFilter(); pf != nil {
		f := inboundFilterFromPB(pf)
		if err := f.Validate(); err != nil {
			return c.wrap(ctx, "Configure", fmt.Errorf("%w: %v", ErrProtocol, err))
		}
		c.mu.Lock()
		c.filter = f
		c.mu.Unlock()
	}
	return nil
}

// InboundFilter is the plugin's inbound filter (protocol minor 2): the one
// its last Configure answer carried, else the one of Describe; nil (every
// message) for older plugins or before Describe.
func (c *Client) InboundFilter() *sdk.InboundFilter {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.filter != nil {
		return c.filter
	}
	if c.info != nil {
		return c.info.InboundFilter
	}
	return nil
}

// serveHost starts the broker server for the Host service once and returns
// its id; later calls swap the HostServer behind it.
func (c *Client) serveHost(h HostServer) uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hostSrv != nil {
		c.hostSrv.set(h)
		return c.hostID
	}
	c.hostSrv = newHostAdapter(c.name, c.log, h, c.opts.MaxMessageSize)
	c.hostID = c.broker.NextId()
	srv := c.hostSrv
	go c.broker.AcceptAndServe(c.hostID, func(opts []grpc.ServerOption) *grpc.Server {
		s := grpc.NewServer(append(opts, sdk.GRPCServerOptions()...)...)
		pb.RegisterHostServer(s, srv)
		return s
	})
	return c.hostID
}

func (c *Client) limitIn() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pluginMax
}
