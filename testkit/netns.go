package testkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/erlmcp/migctl/erl"
)

// NetCluster is a set of Erlang nodes, each in a network namespace of its
// own, joined by a bridge, so a test can cut the network between nodes for
// real (Cut) instead of asking Erlang to disconnect. The test process
// itself stays in the root namespace and reaches every node over the
// bridge. Needs root and iproute2; StartNet skips the test otherwise.
type NetCluster struct {
	t      testing.TB
	e      *env
	id     string
	bridge string
	subnet string // "10.X.Y."
	Dir    string
	Nodes  []*NetNode
}

// NetNode is one node of a NetCluster.
type NetNode struct {
	Name string // n<i>@10.X.Y.Z
	NS   string // network namespace
	IP   string
	Dir  string
	Log  string
	node *exec.Cmd
	epmd *exec.Cmd
}

// StartNet starts n nodes in namespaces and, if mnesia, builds a
// disc_copies Mnesia cluster with the session table erlmcp_session on all
// of them. Everything is removed at cleanup.
func StartNet(t testing.TB, n int, mnesia bool) *NetCluster {
	t.Helper()
	e := mustEnv(t)
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("iproute2 (ip) not installed")
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	c := &NetCluster{t: t, e: e, id: hex.EncodeToString(b[:]), Dir: t.TempDir()}
	c.bridge = "mgb" + c.id
	c.subnet = fmt.Sprintf("10.%d.%d.", 100+int(b[0])%100, b[1])
	t.Cleanup(c.teardown)
	c.ip("link", "add", c.bridge, "type", "bridge")
	c.ip("addr", "add", c.subnet+"1/24", "dev", c.bridge)
	c.ip("link", "set", c.bridge, "up")
	for i := 0; i < n; i++ {
		nn := &NetNode{NS: fmt.Sprintf("migctl-%s-%d", c.id, i), IP: fmt.Sprintf("%s%d", c.subnet, i+2),
			Dir: filepath.Join(c.Dir, fmt.Sprintf("n%d", i))}
		nn.Name = fmt.Sprintf("n%d_%s@%s", i, c.id, nn.IP)
		nn.Log = filepath.Join(nn.Dir, "node.log")
		if err := os.MkdirAll(nn.Dir, 0o755); err != nil {
			t.Fatal(err)
		}
		c.Nodes = append(c.Nodes, nn)
		host, peer := fmt.Sprintf("mgv%s%d", c.id, i), fmt.Sprintf("mgp%s%d", c.id, i)
		c.ip("netns", "add", nn.NS)
		c.ip("link", "add", host, "type", "veth", "peer", "name", peer)
		c.ip("link", "set", host, "master", c.bridge)
		c.ip("link", "set", host, "up")
		c.ip("link", "set", peer, "netns", nn.NS)
		c.ip("-n", nn.NS, "link", "set", "lo", "up")
		c.ip("-n", nn.NS, "addr", "add", nn.IP+"/24", "dev", peer)
		c.ip("-n", nn.NS, "link", "set", peer, "up")
	}
	for _, nn := range c.Nodes {
		if err := c.start(nn); err != nil {
			t.Fatalf("start %s: %v", nn.Name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c.Reconnect(ctx)
	if mnesia {
		if err := c.buildMnesia(ctx); err != nil {
			t.Fatalf("mnesia: %v", err)
		}
	}
	return c
}

func (c *NetCluster) ip(args ...string) {
	c.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		c.t.Fatalf("ip %v: %v: %s", args, err, out)
	}
}

func (c *NetCluster) spawn(nn *NetNode, env []string, args ...string) (*exec.Cmd, error) {
	log, err := os.OpenFile(nn.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", nn.NS}, args...)...)
	cmd.Dir = nn.Dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c.e.track(cmd)
	return cmd, nil
}

func (c *NetCluster) start(nn *NetNode) error {
	port := strconv.Itoa(c.e.epmdPort)
	var err error
	// Each namespace has its own EPMD on the test binary's EPMD port, on
	// loopback (for its node) and on its bridge address (for the others).
	if nn.epmd, err = c.spawn(nn, nil, "epmd", "-port", port, "-address", "127.0.0.1,"+nn.IP); err != nil {
		return err
	}
	time.Sleep(100 * time.Millisecond)
	nn.node, err = c.spawn(nn, []string{"HOME=" + c.e.dir, "ERL_EPMD_PORT=" + port},
		"erl", "-noshell", "-noinput", "-name", nn.Name, "-start_epmd", "false", "-pa", FixtureEbin(), "-pa", LibraryEbin(),
		"-kernel", "dist_auto_connect", "once",
		"-kernel", "prevent_overlapping_partitions", "false",
		// A cut link is noticed after about net_ticktime seconds.
		"-kernel", "net_ticktime", "2",
		"-mnesia", "dir", strconv.Quote(filepath.Join(nn.Dir, "mnesia")))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if err := c.e.client.Connect(ctx, nn.Name); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			b, _ := os.ReadFile(nn.Log)
			return fmt.Errorf("node did not come up: %s", b)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Names are the node names.
func (c *NetCluster) Names() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.Name)
	}
	return out
}

// Client is the shared erl.Client.
func (c *NetCluster) Client() *erl.Client { return c.e.client }

// Cut drops all traffic between node i and node j (both directions) with
// blackhole routes inside their namespaces; Erlang notices after its tick
// timeout. Migctl's own connections (from the root namespace) stay up.
func (c *NetCluster) Cut(i, j int) {
	c.ip("-n", c.Nodes[i].NS, "route", "add", "blackhole", c.Nodes[j].IP+"/32")
	c.ip("-n", c.Nodes[j].NS, "route", "add", "blackhole", c.Nodes[i].IP+"/32")
}

// Mend removes the routes Cut added. Nothing reconnects by itself
// (dist_auto_connect once).
func (c *NetCluster) Mend(i, j int) {
	c.ip("-n", c.Nodes[i].NS, "route", "del", "blackhole", c.Nodes[j].IP+"/32")
	c.ip("-n", c.Nodes[j].NS, "route", "del", "blackhole", c.Nodes[i].IP+"/32")
}

// Reconnect connects every pair of nodes explicitly.
func (c *NetCluster) Reconnect(ctx context.Context) {
	c.t.Helper()
	for i, a := range c.Nodes {
		for _, b := range c.Nodes[i+1:] {
			r, err := c.e.client.Call(ctx, a.Name, "net_kernel", "connect_node", erl.Atom(b.Name))
			if err != nil || r != true {
				c.t.Fatalf("connect %s to %s: %v %v", a.Name, b.Name, r, err)
			}
		}
	}
}

// Eval evaluates Erlang source on node i and fails the test on error.
func (c *NetCluster) Eval(i int, src string, bindings map[string]erl.Term) erl.Term {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := c.e.client.Eval(ctx, c.Nodes[i].Name, src, bindings)
	if err != nil {
		c.t.Fatalf("eval on %s: %v", c.Nodes[i].Name, err)
	}
	return r
}

func (c *NetCluster) buildMnesia(ctx context.Context) error {
	names := make(erl.List, len(c.Nodes))
	for i, n := range c.Nodes {
		names[i] = erl.Atom(n.Name)
	}
	cl := c.e.client
	if r, err := cl.Call(ctx, c.Nodes[0].Name, "mnesia", "create_schema", names); err != nil || r != erl.Atom("ok") {
		return fmt.Errorf("create_schema: %v %v", r, err)
	}
	for _, n := range c.Nodes {
		if r, err := cl.Call(ctx, n.Name, "mnesia", "start"); err != nil || r != erl.Atom("ok") {
			return fmt.Errorf("mnesia:start on %s: %v %v", n.Name, r, err)
		}
	}
	r, err := cl.Eval(ctx, c.Nodes[0].Name, `mnesia:create_table(erlmcp_session, [{attributes, [session_id, session_data, last_accessed]},
	    {type, set}, {disc_copies, Nodes}])`, map[string]erl.Term{"Nodes": names})
	if err != nil {
		return err
	}
	if t, ok := r.(erl.Tuple); !ok || t[0] != erl.Atom("atomic") {
		return fmt.Errorf("create_table: %v", r)
	}
	for _, n := range c.Nodes {
		if r, err := cl.Call(ctx, n.Name, "mnesia", "wait_for_tables", erl.List{erl.Atom("erlmcp_session")}, 30000); err != nil || r != erl.Atom("ok") {
			return fmt.Errorf("wait_for_tables on %s: %v %v", n.Name, r, err)
		}
	}
	return nil
}

func (c *NetCluster) teardown() {
	for _, n := range c.Nodes {
		for _, cmd := range []*exec.Cmd{n.node, n.epmd} {
			if cmd == nil || cmd.Process == nil {
				continue
			}
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			c.e.untrack(cmd.Process.Pid)
		}
		_ = exec.Command("ip", "netns", "del", n.NS).Run()
	}
	// The namespaces go asynchronously and may leave the root ends of the
	// veth pairs behind: delete them (either end removes the pair).
	for i := range c.Nodes {
		_ = exec.Command("ip", "link", "del", fmt.Sprintf("mgv%s%d", c.id, i)).Run()
	}
	if c.bridge != "" {
		_ = exec.Command("ip", "link", "del", c.bridge).Run()
	}
}
