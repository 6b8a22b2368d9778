package erl

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ergo-services/ergo"
	"github.com/ergo-services/ergo/etf"
	"github.com/ergo-services/ergo/gen"
	"github.com/ergo-services/ergo/node"
	"github.com/ergo-services/ergo/proto/dist"
)

// Term is a decoded Erlang term as ergo represents it (etf.Atom, etf.Tuple,
// []byte for binaries, ...; note that the atoms true and false arrive as Go
// bools). Only migctl's own control terms travel this
// way; session data travels as binaries.
type Term = etf.Term

// The term types callers build requests from, as aliases so that only
// package erl (and the typed stubs in erl/agentapi) import ergo's etf: the
// pre-release ergo module stays pinned behind this one line.
type (
	Atom  = etf.Atom
	Tuple = etf.Tuple
	List  = etf.List
	Map   = etf.Map
	Pid   = etf.Pid
	Ref   = etf.Ref
)

// Options configure a Client.
type Options struct {
	// Cookie is the Erlang cookie (see LoadCookie). Required.
	Cookie string
	// Host is the host part of migctl's own node name. Erlang refuses a
	// short-name peer talking to long-name nodes and vice versa, so it
	// should match the style of the target nodes; default "127.0.0.1".
	Host string
	// EPMDPort is the port of EPMD on the target hosts; 0 means
	// $ERL_EPMD_PORT or 4369.
	EPMDPort int
	// Timeout applies to calls whose context has no deadline, and bounds
	// connection set-up. Default 15s.
	Timeout time.Duration
	// MaxInFlight bounds concurrent calls (and therefore messages that can
	// be waiting in the mailbox). Default 64.
	MaxInFlight int
	// Logger receives debug and warning lines; never the cookie.
	Logger *slog.Logger
	// NamePrefix starts migctl's own node name (default "migctl"). Other
	// migctl processes see a connected hidden node named migctl_* as a
	// user of the agent and leave it loaded; test harnesses use another
	// prefix so that they do not count.
	NamePrefix string
}

// Client is migctl's hidden Erlang node. Create one per process with Start.
type Client struct {
	opts  Options
	log   *slog.Logger
	node  node.Node
	proc  gen.Process
	hs    *hiddenHandshake
	epmd  epmd
	slots chan struct{}

	mu        sync.Mutex
	pending   map[etf.Ref]*pendingCall
	monitored map[string]bool // nodes connected through Connect and not seen down since
	subs      map[etf.Atom][]chan Term
	keyed     map[keyedSub]chan Term
	watchers  map[string][]chan struct{}
	forms     map[string]Term          // cached erl_eval forms by source
	agents    map[string]bool          // nodes where the agent is known to be loaded
	mine      map[string][]string      // agent modules this Client loaded, by node
	loading   map[string]chan struct{} // one agent load at a time per node (a 1-slot semaphore)
	dialing   map[string]*sync.Mutex
	closed    bool
	done      chan struct{}
}

type pendingCall struct {
	node string
	ch   chan callResult
}

type callResult struct {
	term Term
	err  error
}

// Start creates the Client's ergo node. It listens on 127.0.0.1 only (it
// never needs inbound connections, but ergo insists on a listener).
func Start(ctx context.Context, opts Options) (*Client, error) {
	if opts.Cookie == "" {
		return nil, ErrNoCookie
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.EPMDPort == 0 {
		opts.EPMDPort = DefaultEPMDPort
		if p, err := strconv.Atoi(os.Getenv("ERL_EPMD_PORT")); err == nil && p > 0 {
			opts.EPMDPort = p
		}
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 15 * time.Second
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 64
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		opts:      opts,
		log:       opts.Logger.With("component", "erl"),
		epmd:      epmd{port: opts.EPMDPort, timeout: min(opts.Timeout, 5*time.Second)},
		slots:     make(chan struct{}, opts.MaxInFlight),
		pending:   map[etf.Ref]*pendingCall{},
		monitored: map[string]bool{},
		subs:      map[etf.Atom][]chan Term{},
		keyed:     map[keyedSub]chan Term{},
		watchers:  map[string][]chan struct{}{},
		forms:     map[string]Term{},
		agents:    map[string]bool{},
		mine:      map[string][]string{},
		loading:   map[string]chan struct{}{},
		dialing:   map[string]*sync.Mutex{},
		done:      make(chan struct{}),
	}
	c.hs = &hiddenHandshake{HandshakeInterface: dist.CreateHandshake(dist.HandshakeOptions{
		Version: dist.HandshakeVersion6,
		Timeout: min(opts.Timeout, 10*time.Second),
	})}
	po := node.DefaultProtoOptions()
	po.NumHandlers = 1 // more than one reorders messages and races the atom cache
	flags := node.DefaultFlags()
	flags.EnableCompression = false // ergo-only extensions; Erlang peers ignore them
	flags.EnableProxy = false
	flags.EnableRemoteSpawn = false
	// EnableHeaderAtomCache stays on: turning it off crashed beam.smp on OTP 25.2.3.

	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	if opts.NamePrefix == "" {
		opts.NamePrefix = "migctl"
	}
	name := fmt.Sprintf("%s_%d_%s@%s", opts.NamePrefix, os.Getpid(), hex.EncodeToString(suffix[:]), opts.Host)
	nopts := node.Options{
		Listeners: []node.Listener{{Hostname: "127.0.0.1", ListenBegin: 15000, ListenEnd: 65000}},
		Flags:     flags,
		Registrar: &registrar{epmd: c.epmd},
		Handshake: c.hs,
		Proto:     dist.CreateProto(po),
		System:    node.System{DisableAnonMetrics: true},
	}
	n, err := ergo.StartNodeWithContext(ctx, name, opts.Cookie, nopts)
	if err != nil {
		return nil, fmt.Errorf("start local node: %w", err)
	}
	c.node = n
	started := make(chan struct{})
	p, err := n.Spawn("", gen.ProcessOptions{MailboxSize: 65535}, &loop{c: c, started: started})
	if err != nil {
		n.Stop()
		return nil, fmt.Errorf("start local process: %w", err)
	}
	<-started
	c.proc = p
	go c.heartbeat()
	c.log.Debug("local node started", "name", name)
	return c, nil
}

// heartbeat keeps connections alive from our side. ergo sends its own
// keepalive only after 15 s of silence, but an Erlang node drops a peer it
// has heard nothing from for net_ticktime (often set to 10-20 s, 8 in our
// tests): during one long call (a big seed, a full checksum) the connection
// is otherwise silent and would be dropped. A message to a name that is
// not registered is discarded by the node, so this costs a few bytes.
func (c *Client) heartbeat() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
			c.mu.Lock()
			nodes := make([]string, 0, len(c.monitored))
			for n := range c.monitored {
				nodes = append(nodes, n)
			}
			c.mu.Unlock()
			for _, n := range nodes {
				_ = c.proc.Send(gen.ProcessID{Name: "migctl_heartbeat", Node: n}, etf.Atom("tick"))
			}
		}
	}
}

// Name is migctl's own node name.
func (c *Client) Name() string { return c.node.Name() }

// Self is the pid of migctl's process, for nodes that send messages back.
func (c *Client) Self() etf.Pid { return c.proc.Self() }

// Close unloads the agent from every node where this Client loaded it, then
// stops the local node. Pending calls fail with ErrClosed.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	var nodes []string
	for n := range c.mine {
		nodes = append(nodes, n)
	}
	c.mu.Unlock()
	var errs []error
	for _, n := range nodes {
		if err := c.UnloadAgent(ctx, n); err != nil {
			errs = append(errs, err)
		}
	}
	c.mu.Lock()
	c.closed = true
	for ref, p := range c.pending {
		p.ch <- callResult{err: ErrClosed}
		delete(c.pending, ref)
	}
	c.mu.Unlock()
	c.node.Stop()
	close(c.done)
	return errors.Join(errs...)
}

// Connect makes sure there is a connection to node, and explains precisely
// why not when there is none: bad name, unresolvable host, no EPMD, node not
// registered, cookie rejected, or the node not answering.
func (c *Client) Connect(ctx context.Context, nodeName string) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	if _, ok := c.monitored[nodeName]; ok {
		c.mu.Unlock()
		return nil
	}
	// One handshake per node at a time: two simultaneous ones make the
	// node refuse the second ("handshake negotiation failed"), which would
	// look like a wrong cookie.
	dl := c.dialing[nodeName]
	if dl == nil {
		dl = &sync.Mutex{}
		c.dialing[nodeName] = dl
	}
	c.mu.Unlock()
	dl.Lock()
	defer dl.Unlock()
	c.mu.Lock()
	_, ok := c.monitored[nodeName]
	c.mu.Unlock()
	if ok {
		return nil
	}

	name, host, err := SplitNode(nodeName)
	if err != nil {
		return err
	}
	ctx, cancel := c.deadline(ctx)
	defer cancel()
	fail := func(err error, hint string) error {
		return &Error{Op: "connect", Node: nodeName, Err: err, Hint: hint}
	}
	// Diagnose in the order an operator would check, each step bounded by
	// the deadline, so a wrong host does not turn into a minute of port scans.
	addrs, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil || len(addrs) == 0 {
		return fail(fmt.Errorf("%w: %v", ErrHostNotFound, err), "check the host part of the node name and /etc/hosts or DNS")
	}
	port, err := c.epmd.portPlease(ctx, name, host)
	switch {
	case errors.Is(err, ErrNotRegistered):
		hint := "is the node running? is the name spelled right?"
		if known, e := c.epmd.names(ctx, host); e == nil {
			hint += fmt.Sprintf(" epmd on %s knows: %v", host, known)
		}
		return fail(err, hint)
	case err != nil:
		return fail(err, fmt.Sprintf("nothing answers on %s:%d; is the host up, and is ERL_EPMD_PORT right?", host, c.epmd.port))
	}
	type res struct{ err error }
	ch := make(chan res, 1)
	go func() { ch <- res{c.node.Connect(nodeName)} }()
	select {
	case <-ctx.Done():
		return fail(ErrTimeout, "the node is registered but did not complete a handshake in time; is it overloaded or frozen?")
	case r := <-ch:
		if r.err != nil {
			addr := net.JoinHostPort(addrs[0], strconv.Itoa(port))
			if c.hs.stage(addr) == hsReplySent {
				return fail(ErrBadCookie, "the node closed the connection after checking our digest: the cookie differs from the node's (check --cookie-file, MIGCTL_COOKIE_FILE or ~/.erlang.cookie)")
			}
			return fail(fmt.Errorf("%w: %v", ErrUnreachable, r.err), fmt.Sprintf("epmd says the node listens on port %d but the handshake failed; a firewall, a dying node, or a node that refuses hidden connections", port))
		}
	}
	// Down detection comes from ergo's network event, not MonitorNode: in
	// v1.999.224 RouteNodeDown deletes from the node-monitor map under a read
	// lock, so two connections dropping at once (a partition, a cluster
	// stopping) race on that map and can crash the process. With no node
	// monitors that map stays empty and is only read.
	c.mu.Lock()
	c.monitored[nodeName] = true
	c.mu.Unlock()
	// A drop between the handshake and the line above sent its event before
	// we were listening for this node: ergo unregisters the connection
	// before it sends the event, so asking for it now closes that gap.
	if !slices.Contains(c.node.Nodes(), nodeName) {
		c.nodeDown(nodeName)
		return fail(ErrNodeDown, "the connection dropped right after the handshake; is the node restarting?")
	}
	c.log.Debug("connected", "node", nodeName)
	return nil
}

// Disconnect drops the connection to node (used by tests and by heal).
func (c *Client) Disconnect(nodeName string) {
	_ = c.node.Disconnect(nodeName)
}

func (c *Client) deadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.opts.Timeout)
}

// Call runs M:F(Args) on node through its rex server, as rpc:call/4 does.
// The context bounds the wait; note that rex has no timeout of its own, so a
// call given up on keeps running on the node.
func (c *Client) Call(ctx context.Context, nodeName, mod, fun string, args ...Term) (Term, error) {
	if args == nil {
		args = []Term{}
	}
	req := etf.Tuple{etf.Atom("call"), etf.Atom(mod), etf.Atom(fun), etf.List(args), etf.Atom("user")}
	t, err := c.genCall(ctx, nodeName, "rex", req)
	if err != nil {
		return nil, withOp(err, fmt.Sprintf("call %s:%s/%d", mod, fun, len(args)), nodeName)
	}
	if tup, ok := t.(etf.Tuple); ok && len(tup) == 2 && tup[0] == etf.Atom("badrpc") {
		return nil, &Error{Op: fmt.Sprintf("call %s:%s/%d", mod, fun, len(args)), Node: nodeName,
			Err: &RPCError{Class: "badrpc", Reason: fmt.Sprint(tup[1])}}
	}
	return t, nil
}

func withOp(err error, op, nodeName string) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	hint := ""
	switch {
	case errors.Is(err, ErrNodeDown):
		hint = "the node or the network to it failed during the call; check the node, then rerun"
	case errors.Is(err, ErrTimeout):
		hint = "raise --timeout, or check the node's load; the call may still be running there"
	}
	return &Error{Op: op, Node: nodeName, Err: err, Hint: hint}
}

// genCall sends {'$gen_call', {Self, Ref}, Req} to a registered process and
// waits for {Ref, Reply}.
func (c *Client) genCall(ctx context.Context, nodeName, to string, req Term) (Term, error) {
	if err := c.Connect(ctx, nodeName); err != nil {
		return nil, err
	}
	ctx, cancel := c.deadline(ctx)
	defer cancel()
	select {
	case c.slots <- struct{}{}:
		defer func() { <-c.slots }()
	case <-ctx.Done():
		return nil, ErrTimeout
	}
	ref := c.node.MakeRef()
	p := &pendingCall{node: nodeName, ch: make(chan callResult, 1)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if _, ok := c.monitored[nodeName]; !ok {
		// The node went down between Connect and here.
		c.mu.Unlock()
		return nil, ErrNodeDown
	}
	c.pending[ref] = p
	c.mu.Unlock()
	msg := etf.Tuple{etf.Atom("$gen_call"), etf.Tuple{c.proc.Self(), ref}, req}
	if err := c.proc.Send(gen.ProcessID{Name: to, Node: nodeName}, msg); err != nil {
		c.drop(ref)
		return nil, fmt.Errorf("%w: send: %v", ErrNodeDown, err)
	}
	select {
	case r := <-p.ch:
		return r.term, r.err
	case <-ctx.Done():
		c.drop(ref)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, ErrTimeout
		}
		return nil, ctx.Err()
	}
}

func (c *Client) drop(ref etf.Ref) {
	c.mu.Lock()
	delete(c.pending, ref)
	c.mu.Unlock()
}

// Subscribe delivers every message whose first tuple element is tag (for
// example forwarded Mnesia events) to the returned channel. A slow reader
// loses messages rather than stall the connection; size buf accordingly.
func (c *Client) Subscribe(tag string, buf int) (<-chan Term, func()) {
	ch := make(chan Term, buf)
	c.mu.Lock()
	c.subs[etf.Atom(tag)] = append(c.subs[etf.Atom(tag)], ch)
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		l := c.subs[etf.Atom(tag)]
		for i := range l {
			if l[i] == ch {
				c.subs[etf.Atom(tag)] = append(l[:i], l[i+1:]...)
				break
			}
		}
	}
}

type keyedSub struct {
	tag etf.Atom
	key string
}

// SubscribeKey delivers messages {Tag, Key, ...} whose Key is the binary
// key to the returned channel: one conversation (a stream, a forwarder)
// among many of the same tag. The sender must bound what it sends (credit)
// to buf; beyond that, messages are dropped and logged.
func (c *Client) SubscribeKey(tag string, key []byte, buf int) (<-chan Term, func()) {
	ch := make(chan Term, buf)
	k := keyedSub{etf.Atom(tag), string(key)}
	c.mu.Lock()
	c.keyed[k] = ch
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		delete(c.keyed, k)
		c.mu.Unlock()
	}
}

// WatchNode returns a channel that is closed when the connection to node
// goes down (at once if there is none).
func (c *Client) WatchNode(nodeName string) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.monitored[nodeName]; !ok {
		close(ch)
		return ch, func() {}
	}
	c.watchers[nodeName] = append(c.watchers[nodeName], ch)
	return ch, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		l := c.watchers[nodeName]
		for i := range l {
			if l[i] == ch {
				c.watchers[nodeName] = append(l[:i], l[i+1:]...)
				break
			}
		}
	}
}

// Send sends msg to a process on a node (no reply expected).
func (c *Client) Send(to etf.Pid, msg Term) error {
	return c.proc.Send(to, msg)
}

// deliver routes one mailbox message; it runs on the loop goroutine only.
func (c *Client) deliver(msg Term) {
	switch m := msg.(type) {
	case etf.Tuple:
		if len(m) == 2 {
			if ref, ok := m[0].(etf.Ref); ok {
				c.mu.Lock()
				p := c.pending[ref]
				delete(c.pending, ref)
				c.mu.Unlock()
				if p != nil {
					p.ch <- callResult{term: m[1]}
				}
				return
			}
		}
		if len(m) == 4 && m[0] == etf.Atom("io_request") {
			// {io_request, From, ReplyAs, Request}: a remote process wrote to
			// us as its group leader; answer or it blocks forever.
			if from, ok := m[1].(etf.Pid); ok {
				_ = c.proc.Send(from, etf.Tuple{etf.Atom("io_reply"), m[2], etf.Atom("ok")})
			}
			return
		}
		if len(m) > 1 {
			if tag, ok := m[0].(etf.Atom); ok {
				if key, ok := m[1].([]byte); ok {
					c.mu.Lock()
					ch, found := c.keyed[keyedSub{tag, string(key)}]
					c.mu.Unlock()
					if found {
						select {
						case ch <- m:
						default:
							c.log.Warn("keyed subscriber full, message dropped", "tag", string(tag))
						}
						return
					}
				}
			}
		}
		if len(m) > 0 {
			if tag, ok := m[0].(etf.Atom); ok {
				c.mu.Lock()
				subs := append([]chan Term(nil), c.subs[tag]...)
				c.mu.Unlock()
				for _, s := range subs {
					select {
					case s <- m:
					default:
						c.log.Warn("subscriber too slow, message dropped", "tag", string(tag))
					}
				}
				return
			}
		}
	case node.MessageEventNetwork:
		if !m.Online {
			c.nodeDown(m.PeerName)
		}
		return
	}
	c.log.Debug("unexpected message", "msg", fmt.Sprintf("%T", msg))
}

// nodeDown fails every call waiting on the node at once.
func (c *Client) nodeDown(nodeName string) {
	c.mu.Lock()
	delete(c.monitored, nodeName)
	delete(c.agents, nodeName) // a restarted node has lost pushed code anyway
	delete(c.mine, nodeName)
	n := 0
	for ref, p := range c.pending {
		if p.node == nodeName {
			p.ch <- callResult{err: ErrNodeDown}
			delete(c.pending, ref)
			n++
		}
	}
	subs := append([]chan Term(nil), c.subs["nodedown"]...)
	for _, w := range c.watchers[nodeName] {
		close(w)
	}
	delete(c.watchers, nodeName)
	c.mu.Unlock()
	for _, s := range subs {
		select {
		case s <- etf.Tuple{etf.Atom("nodedown"), etf.Atom(nodeName)}:
		default:
		}
	}
	c.log.Warn("node down", "node", nodeName, "failed_calls", n)
}

// loop is the Client's single ergo process: it drains the mailbox as fast as
// it can and hands each reply to the goroutine waiting for it.
type loop struct {
	c       *Client
	started chan struct{}
}

func (l *loop) ProcessInit(p gen.Process, args ...etf.Term) (gen.ProcessState, error) {
	if err := p.MonitorEvent(node.EventNetwork); err != nil {
		return gen.ProcessState{}, fmt.Errorf("watch connections: %w", err)
	}
	return gen.ProcessState{Process: p}, nil
}

func (l *loop) ProcessLoop(ps gen.ProcessState, started chan<- bool) string {
	ch := ps.ProcessChannels()
	started <- true
	close(l.started)
	for {
		select {
		case m := <-ch.Mailbox:
			l.c.deliver(m.Message)
		case ex := <-ch.GracefulExit:
			return ex.Reason
		case d := <-ch.Direct:
			_ = d // no direct requests are used
		case <-ps.Context().Done():
			return "kill"
		}
	}
}
