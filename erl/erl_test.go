package erl_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ergo-services/ergo/etf"
	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/testkit"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestCallEvalAndHidden(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1})
	c := cl.Client()
	n := cl.Nodes[0].Name

	rel, err := c.Call(ctx(t), n, "erlang", "system_info", etf.Atom("otp_release"))
	require.NoError(t, err)
	require.NotEmpty(t, rel)

	// migctl joins hidden: the node lists it in nodes(hidden), not nodes().
	vis, err := c.Call(ctx(t), n, "erlang", "nodes")
	require.NoError(t, err)
	require.NotContains(t, vis, etf.Atom(c.Name()))
	hid, err := c.Call(ctx(t), n, "erlang", "nodes", etf.Atom("hidden"))
	require.NoError(t, err)
	require.Contains(t, hid, etf.Atom(c.Name()))

	// Eval with bindings; the same source twice uses the cached form.
	for i := 0; i < 2; i++ {
		v, err := c.Eval(ctx(t), n, "lists:sum([X || X <- L]) * M", map[string]erl.Term{"L": etf.List{1, 2, 3}, "M": i + 1})
		require.NoError(t, err)
		require.EqualValues(t, 6*(i+1), v)
	}

	// A remote exception is an RPCError, and the connection survives it.
	_, err = c.Call(ctx(t), n, "erlang", "error", etf.Atom("boom"))
	require.ErrorIs(t, err, erl.ErrBadRPC)
	_, err = c.Call(ctx(t), n, "erlang", "node")
	require.NoError(t, err)
}

func TestConcurrentCallsKeepOrderAndAtoms(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1})
	c := cl.Client()
	n := cl.Nodes[0].Name
	var wg sync.WaitGroup
	errs := make(chan error, 640)
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				want := etf.Atom("atom_" + string(rune('a'+g%26)) + "_" + string(rune('a'+i)))
				got, err := c.Call(context.Background(), n, "erlang", "binary_to_atom", []byte(want))
				if err != nil {
					errs <- err
					return
				}
				if got != want {
					errs <- errors.New("wrong atom back: " + string(want) + " got " + string(got.(etf.Atom)))
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestConnectErrorsAreTold(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1})
	c := cl.Client()
	_, host, _ := erl.SplitNode(cl.Nodes[0].Name)

	err := c.Connect(ctx(t), "nobody_here@"+host)
	require.ErrorIs(t, err, erl.ErrNotRegistered)
	require.Contains(t, err.Error(), cl.Nodes[0].Name[:len("migt_")], "hint lists the known names")

	err = c.Connect(ctx(t), "x@no-such-host.invalid")
	require.ErrorIs(t, err, erl.ErrHostNotFound)

	err = c.Connect(ctx(t), "not-a-node-name")
	require.ErrorIs(t, err, erl.ErrBadNodeName)

	wrong := testkit.Start(t, testkit.Options{Nodes: 1, Cookie: "WRONGCOOKIE"})
	start := time.Now()
	err = c.Connect(ctx(t), wrong.Nodes[0].Name)
	require.ErrorIs(t, err, erl.ErrBadCookie)
	require.NotContains(t, err.Error(), testkit.Cookie(t), "the cookie never appears in an error")
	require.NotContains(t, err.Error(), "WRONGCOOKIE")
	require.Less(t, time.Since(start), 20*time.Second)
}

func TestPendingCallsFailWhenNodeDies(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1})
	c := cl.Client()
	n := cl.Nodes[0].Name
	done := make(chan error, 10)
	for i := 0; i < 10; i++ {
		go func() {
			_, err := c.Call(context.Background(), n, "timer", "sleep", 60000)
			done <- err
		}()
	}
	time.Sleep(300 * time.Millisecond)
	cl.Nodes[0].Kill()
	deadline := time.After(10 * time.Second)
	for i := 0; i < 10; i++ {
		select {
		case err := <-done:
			require.ErrorIs(t, err, erl.ErrNodeDown)
		case <-deadline:
			t.Fatal("pending calls were not failed when the node died")
		}
	}
}

func TestAgentLoadsAndUnloads(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1})
	c := cl.Client()
	n := cl.Nodes[0].Name
	r, err := c.Agent(ctx(t), n, "version")
	require.NoError(t, err)
	require.Equal(t, etf.Atom("ok"), r[0])
	loaded, err := c.Call(ctx(t), n, "code", "is_loaded", etf.Atom("migctl_agent"))
	require.NoError(t, err)
	require.NotEqual(t, false, loaded)
	require.NoError(t, c.UnloadAgent(ctx(t), n))
	loaded, err = c.Call(ctx(t), n, "code", "is_loaded", etf.Atom("migctl_agent"))
	require.NoError(t, err)
	require.Equal(t, false, loaded, "nothing of migctl is left loaded on the node")
}

// Concurrent first calls to one node (a check reads both its sides at
// once) load the agent once: a second load would turn the first copy of
// every module into old code under what the first caller had started.
func TestAgentLoadedOnceUnderConcurrentCalls(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1})
	c := cl.Client()
	n := cl.Nodes[0].Name
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Agent(ctx(t), n, "version")
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	old := cl.Eval(0, `[M || {M, _} <- code:all_loaded(), lists:prefix("migctl_", atom_to_list(M)), erlang:check_old_code(M)]`, nil)
	require.Empty(t, old, "agent modules loaded twice (old code left)")
	require.NoError(t, c.UnloadAgent(ctx(t), n))
	loaded := cl.Eval(0, `[M || {M, _} <- code:all_loaded(), lists:prefix("migctl_", atom_to_list(M))]`, nil)
	require.Empty(t, loaded, "nothing of migctl is left loaded on the node")
}

// A migctl_agent whose old code is still running in some process must not
// be replaced: the code server would kill that process. EnsureAgent
// refuses instead, and the process lives on.
func TestAgentRefusesToPurgeCodeInUse(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1})
	c := cl.Client()
	n := cl.Nodes[0].Name
	// Two versions of a fake migctl_agent, compiled on the node.
	compileAndLoad := func(v string) {
		r := cl.Eval(0, `Lines = ["-module(migctl_agent).", "-export([loop/0, v/0]).",
		                  "loop() -> receive stop -> ok end.", "v() -> " ++ V ++ "."],
		  Forms = [begin {ok, T, _} = erl_scan:string(L), {ok, F} = erl_parse:parse_form(T), F end || L <- Lines],
		  {ok, M, Bin} = compile:forms(Forms, []),
		  code:load_binary(M, "fake.beam", Bin)`, map[string]erl.Term{"V": v})
		require.Equal(t, etf.Atom("module"), r.(etf.Tuple)[0])
	}
	compileAndLoad("1")
	pid := cl.Eval(0, `spawn(fun migctl_agent:loop/0)`, nil)
	compileAndLoad("2") // v1 is now old code, still running in pid
	err := c.EnsureAgent(ctx(t), n)
	require.Error(t, err)
	require.Contains(t, err.Error(), "still running")
	alive := cl.Call(0, "erlang", "is_process_alive", pid)
	require.Equal(t, true, alive, "the process running old code was not killed")
	_ = c.Send(pid.(etf.Pid), etf.Atom("stop"))
}

// migctl registers nothing with EPMD: it is not a node anyone can find.
func TestRegistersNothing(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1})
	c := cl.Client()
	names, err := c.Call(ctx(t), cl.Nodes[0].Name, "net_adm", "names")
	require.NoError(t, err)
	require.NotContains(t, fmt.Sprint(names), strings.Split(c.Name(), "@")[0])
}

// A burst of messages to migctl is not lost (ergo's default mailbox of 100
// dropped a third of a 100k burst).
func TestMessageBurstIsNotLost(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1})
	c := cl.Client()
	const n = 50000
	ch, cancel := c.SubscribeKey("burst", []byte("k1"), n)
	defer cancel()
	cl.Eval(0, `[Pid ! {burst, <<"k1">>, I} || I <- lists:seq(1, N)], ok`, map[string]erl.Term{"Pid": c.Self(), "N": n})
	got := 0
	timeout := time.After(60 * time.Second)
	for got < n {
		select {
		case m := <-ch:
			got++
			require.EqualValues(t, got, m.(etf.Tuple)[2], "messages arrive in order")
		case <-timeout:
			t.Fatalf("only %d of %d messages arrived", got, n)
		}
	}
}

// A call that outlives its context's deadline returns at the deadline.
func TestDeadlineFromContext(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1})
	c := cl.Client()
	cx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Call(cx, cl.Nodes[0].Name, "timer", "sleep", 5000)
	require.ErrorIs(t, err, erl.ErrTimeout)
	require.Less(t, time.Since(start), 3*time.Second)
}

// Many goroutines making their first call to a node at once all succeed
// (simultaneous handshakes were refused by the node and looked like a bad
// cookie).
func TestConcurrentFirstCalls(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 2})
	c := cl.Client()
	for _, n := range cl.Names() {
		c.Disconnect(n)
	}
	time.Sleep(200 * time.Millisecond)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := c.Call(ctx(t), cl.Nodes[i%2].Name, "erlang", "node")
			errs <- err
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// The agent is not unloaded under a process still running it (another
// migctl's stream or forwarder): deleting it would leave that process on
// old code and break the next load.
func TestAgentStaysWhileInUse(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Backend: "erlmcp_session_ets"})
	c := cl.Client()
	n := cl.Nodes[0].Name
	cl.Call(0, "erlmcp_fixture_seed", "seed", etf.Atom("ets"), etf.Map{}, 50, 1)
	// A stream that never gets its ack: its process waits in agent code.
	r, err := c.Agent(ctx(t), n, "stream_push", etf.Tuple{etf.Atom("ets"), etf.Atom("erlmcp_sessions_ets")}, []byte{}, 10, 1, c.Self(), []byte("t"))
	require.NoError(t, err)
	require.NoError(t, c.UnloadAgent(ctx(t), n))
	require.NotEqual(t, false, cl.Call(0, "code", "is_loaded", etf.Atom("migctl_agent")), "left loaded while in use")
	_ = c.Send(r[1].(etf.Pid), etf.Tuple{etf.Atom("migctl_stop"), []byte("t")})
}

// A call abandoned by its caller (a timeout) can still wait on the node
// with the agent's frames under the function it waits in (dets:info/2 on
// a table still being repaired, a Mnesia table loading). Unloading must
// leave the agent then: deleting it left the waiting call on old code
// and the node with none current, and every later migctl failed to load
// its agent ("old code of the module is still running") until that call
// returned. The next migctl must load the agent and work.
func TestAgentStaysUnderAnAbandonedCall(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1})
	c := cl.Client()
	n := cl.Nodes[0].Name
	_, err := c.Agent(ctx(t), n, "version")
	require.NoError(t, err)
	// migctl_lib:safe/1 is under every agent function; here it waits in
	// a receive of the caller's fun, not in agent code.
	pid := cl.Eval(0, `spawn(fun() -> migctl_lib:safe(fun() -> receive stop -> {ok, done} end end) end)`, nil)
	t.Cleanup(func() { _ = c.Send(pid.(etf.Pid), etf.Atom("stop")) })
	require.NoError(t, c.UnloadAgent(ctx(t), n))
	require.NotEqual(t, false, cl.Call(0, "code", "is_loaded", etf.Atom("migctl_lib")), "left loaded while a call waits in it")
	r, err := c.Agent(ctx(t), n, "version")
	require.NoError(t, err, "the next migctl loads its agent")
	require.Equal(t, etf.Atom("ok"), r[0])
	require.Equal(t, true, cl.Call(0, "erlang", "is_process_alive", pid), "the waiting call was not killed")
}

// Several connections dropping at the same moment (a partition, a cluster
// stopping) must fail every waiting call on each node and leave the client
// able to reconnect. Run under the race detector: ergo's node monitors raced
// here (a map deleted from under a read lock), so the client does not use them.
func TestManyNodesDownAtOnce(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 3})
	c := cl.Client()
	for round := 0; round < 3; round++ {
		done := make(chan error, 3*4)
		for _, n := range cl.Nodes {
			_, err := c.Call(ctx(t), n.Name, "erlang", "node")
			require.NoError(t, err, "round %d: reconnect to %s", round, n.Name)
			for i := 0; i < 4; i++ {
				go func(name string) {
					_, err := c.Call(context.Background(), name, "timer", "sleep", 60000)
					done <- err
				}(n.Name)
			}
		}
		time.Sleep(300 * time.Millisecond)
		var wg sync.WaitGroup
		for _, n := range cl.Nodes {
			wg.Add(1)
			go func(n *testkit.Node) { defer wg.Done(); n.Kill() }(n)
		}
		wg.Wait()
		deadline := time.After(10 * time.Second)
		for i := 0; i < cap(done); i++ {
			select {
			case err := <-done:
				require.ErrorIs(t, err, erl.ErrNodeDown)
			case <-deadline:
				t.Fatalf("round %d: pending calls were not failed when the nodes died", round)
			}
		}
		for _, n := range cl.Nodes {
			require.NoError(t, n.Restart(ctx(t)))
		}
	}
}
