package testkit

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/erlmcp/migctl/erl"
)

// Options describe a test cluster.
type Options struct {
	Nodes int // how many nodes; default 1
	// Backend is the fixture's session backend module to start the
	// application with (erlmcp_session_ets, _dets, _mnesia or the hybrid);
	// empty starts no application.
	Backend string
	// AppEnv is extra application environment for erlmcp_fixture, as
	// Erlang terms in text: {key, Value} each.
	AppEnv []string
	// Mnesia builds a disc_copies Mnesia cluster over all nodes (schema,
	// and the session table) before the application starts.
	Mnesia bool
	// MnesiaNodes limits the Mnesia cluster to the first MnesiaNodes nodes
	// (0: all), leaving the others as plain nodes (a reader, a node to add).
	MnesiaNodes int
	// SessionTable is the Mnesia session table; default erlmcp_session.
	SessionTable string
	// PreventOverlappingPartitions sets the kernel parameter (OTP 25's
	// default is true).
	PreventOverlappingPartitions bool
	// NetTicktime in seconds (default 8, so that lost nodes are noticed fast).
	NetTicktime int
	// Cookie overrides the test binary's cookie for these nodes (to test
	// a wrong cookie).
	Cookie string
	// ClockOffset runs every node with its clock this far from the host's
	// (and so from migctl's), through libfaketime (Debian's libfaketime,
	// installed by make deps): the nodes' erlang:system_time is off by it,
	// their monotonic clocks and timers are not. What a node sees when the
	// host's clock was stepped after it booted (in Erlang's default
	// no_time_warp mode its system time does not follow), or what migctl
	// sees of nodes on another host whose clock is off.
	ClockOffset time.Duration
}

// libfaketime is Debian's path of the thread-safe libfaketime (the
// multiarch directory is the host's).
const libfaketime = "/usr/lib/*/faketime/libfaketimeMT.so.1"

// clockEnv is the environment that starts a node with its clock d from
// the host's.
func clockEnv(d time.Duration) ([]string, error) {
	if d == 0 {
		return nil, nil
	}
	libs, _ := filepath.Glob(libfaketime)
	if len(libs) == 0 {
		return nil, fmt.Errorf("ClockOffset needs libfaketime (%s; make deps installs Debian's faketime)", libfaketime)
	}
	return []string{
		"LD_PRELOAD=" + libs[0],
		// A relative offset in seconds, applied to the realtime clock
		// only: timers, sleeps and the distribution's ticks keep the
		// true monotonic clock.
		fmt.Sprintf("FAKETIME=%+.3f", d.Seconds()),
		"FAKETIME_DONT_FAKE_MONOTONIC=1",
	}, nil
}

// Cluster is a set of running Erlang nodes owned by one test.
type Cluster struct {
	t     testing.TB
	e     *env
	opts  Options
	id    string
	Dir   string
	Nodes []*Node
}

// Node is one Erlang node of a Cluster.
type Node struct {
	Name    string
	Dir     string // its working directory: mnesia dir, DETS files, log
	Log     string
	Args    []string
	cmd     *exec.Cmd
	cluster *Cluster
}

// Start starts a cluster and registers its teardown with t.Cleanup.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	e := mustEnv(t)
	if opts.Nodes <= 0 {
		opts.Nodes = 1
	}
	if opts.SessionTable == "" {
		opts.SessionTable = "erlmcp_session"
	}
	if opts.NetTicktime == 0 {
		opts.NetTicktime = 8
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	c := &Cluster{t: t, e: e, opts: opts, id: hex.EncodeToString(b[:]), Dir: t.TempDir()}
	t.Cleanup(c.Stop)
	for i := 1; i <= opts.Nodes; i++ {
		name := fmt.Sprintf("%s_%s_%d@127.0.0.1", e.prefix, c.id, i)
		dir := filepath.Join(c.Dir, fmt.Sprintf("n%d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		c.Nodes = append(c.Nodes, &Node{Name: name, Dir: dir, Log: filepath.Join(dir, "node.log"), cluster: c})
	}
	for _, n := range c.Nodes {
		if err := n.start(); err != nil {
			t.Fatalf("start %s: %v", n.Name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if opts.Nodes > 1 {
		c.ConnectAll(ctx)
	}
	if opts.Mnesia {
		if err := c.BuildMnesia(ctx); err != nil {
			t.Fatalf("build mnesia cluster: %v", err)
		}
	}
	if opts.Backend != "" {
		for _, n := range c.Nodes {
			if err := n.StartApp(ctx, opts.Backend, opts.AppEnv...); err != nil {
				t.Fatalf("start application on %s: %v\n%s", n.Name, err, n.Tail())
			}
		}
	}
	return c
}

// Names are the node names, in order.
func (c *Cluster) Names() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Name
	}
	return out
}

// Client is the shared erl.Client.
func (c *Cluster) Client() *erl.Client { return c.e.client }

func (n *Node) start() error {
	e := n.cluster.e
	o := n.cluster.opts
	pop := "false"
	if o.PreventOverlappingPartitions {
		pop = "true"
	}
	args := []string{
		"-noshell", "-noinput",
		"-name", n.Name,
		"-start_epmd", "false",
		"-pa", FixtureEbin(), "-pa", LibraryEbin(),
		"-kernel", "dist_auto_connect", "once",
		"-kernel", "prevent_overlapping_partitions", pop,
		"-kernel", "net_ticktime", strconv.Itoa(o.NetTicktime),
		"-mnesia", "dir", strconv.Quote(filepath.Join(n.Dir, "mnesia")),
	}
	n.Args = args
	log, err := os.OpenFile(n.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command("erl", args...)
	cmd.Dir = n.Dir
	// The cookie reaches the node through $HOME/.erlang.cookie, never argv.
	home := e.dir
	if o.Cookie != "" {
		home = filepath.Join(n.cluster.Dir, "home")
		if err := os.MkdirAll(home, 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(home, ".erlang.cookie"), []byte(o.Cookie), 0o400); err != nil && !os.IsPermission(err) {
			return err
		}
	}
	cmd.Env = append(os.Environ(), "HOME="+home, "ERL_EPMD_PORT="+strconv.Itoa(e.epmdPort))
	ce, err := clockEnv(o.ClockOffset)
	if err != nil {
		return err
	}
	cmd.Env = append(cmd.Env, ce...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	n.cmd = cmd
	e.track(cmd)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if o.Cookie != "" {
			// We cannot connect with another cookie: wait for EPMD instead.
			if reg, _ := e.registered(n.Name); reg {
				return nil
			}
		} else if err := e.client.Connect(ctx, n.Name); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node did not come up: %s", n.Tail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Pid is the OS pid of the node's beam process.
func (n *Node) Pid() int {
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Freeze stops the node's VM with SIGSTOP, as a hung host would, and
// returns only once the kernel reports the process stopped: kill(2) only
// queues the signal, and a call sent in that window can still be answered.
// The node is continued when the test ends (a later Kill works either way).
func (n *Node) Freeze(t testing.TB) {
	t.Helper()
	pid := n.Pid()
	if pid == 0 {
		t.Fatalf("freeze %s: not running", n.Name)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("freeze %s: %v", n.Name, err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if procState(pid) == 'T' {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("freeze %s: pid %d not stopped after 10 s (state %q)", n.Name, pid, procState(pid))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// procState is the one-letter state in /proc/PID/stat ('T' when stopped),
// or 0 when it cannot be read. The command name may hold spaces or
// parentheses, so the state is read after the last ')'.
func procState(pid int) byte {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

// Running tells whether the node's OS process is alive.
func (n *Node) Running() bool {
	return n.cmd != nil && n.cmd.ProcessState == nil && syscall.Kill(n.cmd.Process.Pid, 0) == nil
}

// Kill stops the node at once (SIGKILL), as a crash would.
func (n *Node) Kill() {
	if n.cmd == nil {
		return
	}
	pid := n.cmd.Process.Pid
	_ = n.cmd.Process.Kill()
	_ = n.cmd.Wait()
	n.cluster.e.untrack(pid)
	n.cmd = nil
}

// Stop asks the node to stop (init:stop) and waits, then kills it if needed.
func (n *Node) Stop() {
	if n.cmd == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, _ = n.cluster.e.client.Call(ctx, n.Name, "init", "stop")
	cancel()
	done := make(chan struct{})
	go func() { _ = n.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = n.cmd.Process.Kill()
		<-done
	}
	n.cluster.e.untrack(n.cmd.Process.Pid)
	n.cmd = nil
}

// Restart starts a stopped or killed node again with the same name and
// directory (its Mnesia and DETS files survive).
func (n *Node) Restart(ctx context.Context) error {
	if n.cmd != nil {
		n.Stop()
	}
	return n.start()
}

// Tail is the end of the node's log, for failure messages.
func (n *Node) Tail() string {
	b, _ := os.ReadFile(n.Log)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// LogDirEnv names a folder where Stop copies the whole log of every node of
// a failed test (the output shows only the end of each).
const LogDirEnv = "MIGCTL_TEST_LOG_DIR"

// Stop stops every node of the cluster (registered with t.Cleanup by Start).
// When the test failed, the end of each node's log goes to the test's
// output first: the temporary directory holding it is removed afterwards,
// and a failure under CI is otherwise hard to explain.
func (c *Cluster) Stop() {
	if c.t.Failed() {
		keep := os.Getenv(LogDirEnv)
		for _, n := range c.Nodes {
			c.t.Logf("log of %s (last 3000 bytes):\n%s", n.Name, n.Tail())
			if keep != "" {
				if b, err := os.ReadFile(n.Log); err == nil && os.MkdirAll(keep, 0o755) == nil {
					f := filepath.Join(keep, n.Name+".log")
					if os.WriteFile(f, b, 0o644) == nil {
						c.t.Logf("whole log of %s kept in %s", n.Name, f)
					}
				}
			}
		}
	}
	for _, n := range c.Nodes {
		n.Kill()
	}
}

// Call runs M:F(A) on node i (0-based) and fails the test on error.
func (c *Cluster) Call(i int, mod, fun string, args ...erl.Term) erl.Term {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t, err := c.e.client.Call(ctx, c.Nodes[i].Name, mod, fun, args...)
	if err != nil {
		c.t.Fatalf("%s:%s on %s: %v", mod, fun, c.Nodes[i].Name, err)
	}
	return t
}

// Eval evaluates Erlang source on node i and fails the test on error.
func (c *Cluster) Eval(i int, src string, bindings map[string]erl.Term) erl.Term {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	t, err := c.e.client.Eval(ctx, c.Nodes[i].Name, src, bindings)
	if err != nil {
		c.t.Fatalf("eval on %s: %v", c.Nodes[i].Name, err)
	}
	return t
}

// ConnectAll connects every pair of nodes explicitly (dist_auto_connect is
// "once", so nothing reconnects by itself after a partition).
func (c *Cluster) ConnectAll(ctx context.Context) {
	c.t.Helper()
	for i, a := range c.Nodes {
		for _, b := range c.Nodes[i+1:] {
			t, err := c.e.client.Call(ctx, a.Name, "net_kernel", "connect_node", erl.Atom(b.Name))
			if err != nil || t != true {
				c.t.Fatalf("connect %s to %s: %v %v", a.Name, b.Name, t, err)
			}
		}
	}
}

// Partition cuts the cluster into the given islands of node indexes: every
// node is disconnected from every node not in its island.
func (c *Cluster) Partition(islands ...[]int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	island := map[int]int{}
	for k, is := range islands {
		for _, i := range is {
			island[i] = k
		}
	}
	for i := range c.Nodes {
		for j := range c.Nodes {
			if i < j && island[i] != island[j] {
				_, err := c.e.client.Call(ctx, c.Nodes[i].Name, "erlang", "disconnect_node", erl.Atom(c.Nodes[j].Name))
				if err != nil {
					c.t.Fatalf("disconnect: %v", err)
				}
			}
		}
	}
	// Wait until every node sees exactly its island, five polls in a row.
	// With prevent_overlapping_partitions on, global also cuts links
	// inside an island; those are reconnected here (Mnesia may still end
	// up split into more islands than asked for: that is what the setting
	// does to a real cluster, and what a heal must cope with).
	deadline := time.Now().Add(20 * time.Second)
	for stable := 0; stable < 5; {
		settled := true
		for i, n := range c.Nodes {
			t, err := c.e.client.Call(ctx, n.Name, "erlang", "nodes")
			if err != nil {
				c.t.Fatalf("nodes() on %s: %v", n.Name, err)
			}
			seen := map[string]bool{}
			if l, ok := t.(erl.List); ok {
				for _, x := range l {
					seen[fmt.Sprint(x)] = true
				}
			}
			for j, m := range c.Nodes {
				if i == j || seen[m.Name] == (island[i] == island[j]) {
					continue
				}
				settled = false
				if island[i] == island[j] {
					_, _ = c.e.client.Call(ctx, n.Name, "net_kernel", "connect_node", erl.Atom(m.Name))
				}
			}
		}
		if settled {
			stable++
		} else {
			stable = 0
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("partition %v did not settle", islands)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *Cluster) index(n *Node) int {
	for i, m := range c.Nodes {
		if m == n {
			return i
		}
	}
	return -1
}

// BuildMnesia creates a schema on all nodes and the session table with
// disc_copies everywhere, the way an operator following the runbook would.
func (c *Cluster) BuildMnesia(ctx context.Context) error {
	members := c.Nodes
	if m := c.opts.MnesiaNodes; m > 0 && m < len(members) {
		members = members[:m]
	}
	names := make(erl.List, len(members))
	for i, n := range members {
		names[i] = erl.Atom(n.Name)
	}
	for _, n := range members {
		if _, err := c.e.client.Call(ctx, n.Name, "mnesia", "stop"); err != nil {
			return err
		}
	}
	r, err := c.e.client.Call(ctx, c.Nodes[0].Name, "mnesia", "create_schema", names)
	if err != nil {
		return err
	}
	if r != erl.Atom("ok") {
		return fmt.Errorf("create_schema: %v", r)
	}
	for _, n := range members {
		if r, err := c.e.client.Call(ctx, n.Name, "mnesia", "start"); err != nil || r != erl.Atom("ok") {
			return fmt.Errorf("mnesia:start on %s: %v %v", n.Name, r, err)
		}
	}
	tab := c.opts.SessionTable
	src := `mnesia:create_table(Tab, [{attributes, [session_id, session_data, last_accessed]},
	           {record_name, Tab}, {type, set}, {disc_copies, Nodes}])`
	r, err = c.e.client.Eval(ctx, c.Nodes[0].Name, src, map[string]erl.Term{"Tab": erl.Atom(tab), "Nodes": names})
	if err != nil {
		return err
	}
	if t, ok := r.(erl.Tuple); !ok || t[0] != erl.Atom("atomic") {
		return fmt.Errorf("create_table: %v", r)
	}
	for _, n := range members {
		r, err := c.e.client.Call(ctx, n.Name, "mnesia", "wait_for_tables", erl.List{erl.Atom(tab)}, 30000)
		if err != nil || r != erl.Atom("ok") {
			return fmt.Errorf("wait_for_tables on %s: %v %v", n.Name, r, err)
		}
	}
	return nil
}

// StartApp starts the fixture application on the node with a backend.
// appEnv entries are Erlang terms in text, {Key, Value}.
func (n *Node) StartApp(ctx context.Context, backend string, appEnv ...string) error {
	c := n.cluster
	// The store server is shaped like erlmcp's own (it drops every message
	// it does not know, erlmcp_session_server) unless a test asks for the
	// fixture's: what passes here must pass against erlmcp.
	env := []string{fmt.Sprintf("{session_backend, %s}", backend), fmt.Sprintf("{dets_dir, %q}", n.Dir)}
	if !hasEnvKey(appEnv, "store_server") {
		env = append(env, "{store_server, erlmcp}")
	}
	env = append(env, appEnv...)
	src := `{ok, T, _} = erl_scan:string(S), {ok, Env} = erl_parse:parse_term(T),
	        application:load(erlmcp_fixture),
	        [application:set_env(erlmcp_fixture, K, V) || {K, V} <- Env],
	        application:ensure_all_started(erlmcp_fixture)`
	r, err := c.e.client.Eval(ctx, n.Name, src, map[string]erl.Term{"S": "[" + strings.Join(env, ",") + "]."})
	if err != nil {
		return err
	}
	if t, ok := r.(erl.Tuple); !ok || t[0] != erl.Atom("ok") {
		return fmt.Errorf("start erlmcp_fixture: %v", r)
	}
	// The change recorder (migctl_node, started with the fixture as an
	// erlmcp release would) subscribes once the session table exists;
	// tests that write right away wait for it, as a service running for
	// days before any split would have it.
	wait := `Deadline = erlang:monotonic_time(millisecond) + 5000,
	         W = fun W() ->
	             case migctl_recorder:info() of
	                 #{running := true, tables := Ts} ->
	                     Pending = mnesia:system_info(is_running) =:= yes andalso
	                          lists:any(fun(#{subscribed := S}) -> not S end, Ts) andalso
	                          lists:any(fun(#{table := T}) -> lists:member(T, mnesia:system_info(tables)) end, Ts),
	                     Late = erlang:monotonic_time(millisecond) > Deadline,
	                     case {Pending, Late} of
	                         {true, false} -> timer:sleep(50), W();
	                         {true, true} -> timeout;
	                         _ -> ok
	                     end;
	                 _ -> ok
	             end
	         end,
	         W()`
	r, err = c.e.client.Eval(ctx, n.Name, wait, nil)
	if err != nil {
		return err
	}
	if r != erl.Atom("ok") {
		return fmt.Errorf("the change recorder did not subscribe: %v", r)
	}
	return nil
}

// hasEnvKey reports whether one of the {Key, Value} terms sets key.
func hasEnvKey(appEnv []string, key string) bool {
	for _, e := range appEnv {
		if strings.HasPrefix(strings.TrimLeft(strings.TrimSpace(e), "{ "), key+",") ||
			strings.HasPrefix(strings.TrimLeft(strings.TrimSpace(e), "{ "), key+" ") {
			return true
		}
	}
	return false
}
