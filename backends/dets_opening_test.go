package backends_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/erl/agentapi"
	"github.com/erlmcp/migctl/journal"
	"github.com/erlmcp/migctl/probe"
	"github.com/erlmcp/migctl/testkit"
)

// A node restarting after a crash opens its DETS file by repairing it
// first, and DETS makes every call to the table wait until the open is
// done (75 s for the big run's 1.7 GB file). migctl must say so at once
// instead of waiting out its timeout, ping must show the table as
// opening, and nothing may be left on the node that keeps the next migctl
// from loading its agent (a call abandoned inside dets:info/2 kept the
// agent's code in use, and every command on the node failed until the
// repair ended).
//
// The file is a real one left not properly closed (an Erlang VM wrote it
// and halted without closing it, as a kill does); the table's process is
// suspended while it opens it, so the test holds the "opening" state as
// long as it needs instead of racing a repair of some seconds.
func TestDETSOpeningIsReportedNotWaitedFor(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1})
	c := cl.Client()
	n := cl.Nodes[0].Name
	file := filepath.Join(t.TempDir(), "crashed.dets")
	const rows = 20000
	vm, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(vm, "erl", "-noshell", "-noinput", "-eval", fmt.Sprintf(`
		{ok, T} = dets:open_file(crashed, [{file, %q}]),
		S = fun(I) -> Id = integer_to_binary(I), {Id, #{id => Id, last_accessed => 0, created_at => 0, metadata => #{}}} end,
		ok = dets:insert(T, [S(I) || I <- lists:seq(1, %d)]),
		ok = dets:sync(T),
		ok = dets:insert(T, S(1)),
		erlang:halt(0, [{flush, false}]).`, file, rows)).CombinedOutput()
	require.NoError(t, err, "%s", out)

	// Open it on the node as erlmcp's store server does, and hold the
	// table's process while it is opening.
	// A suspension lasts as long as the process that made it: a holder
	// keeps it until told to resume.
	r := cl.Eval(0, `Opener = spawn(fun() -> R = dets:open_file(migctl_crashed, [{file, F}]),
	                     receive stop -> dets:close(migctl_crashed), exit(R) end end),
	    Self = self(),
	    W = fun W(0) -> none; W(K) ->
	            case catch dets_server:get_pid(migctl_crashed) of
	                P when is_pid(P) -> P;
	                _ -> W(K - 1)
	            end end,
	    Holder = spawn(fun() ->
	        Tab = W(1000000),
	        true = erlang:suspend_process(Tab),
	        {backtrace, B} = process_info(Tab, backtrace),
	        Self ! {held, Tab, binary:match(B, [<<"dets:init/2">>, <<"dets:do_internal_open/">>]) =/= nomatch},
	        receive resume -> erlang:resume_process(Tab) end
	    end),
	    receive {held, Tab, Opening} -> {Opener, Holder, Opening} after 30000 -> timeout end`,
		map[string]erl.Term{"F": file})
	tup, ok := r.(erl.Tuple)
	require.True(t, ok, "%v", r)
	opener, holder := tup[0], tup[1]
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = c.Send(holder.(erl.Pid), erl.Atom("resume"))
		}
	}
	t.Cleanup(func() {
		resume()
		_ = c.Send(opener.(erl.Pid), erl.Atom("stop"))
	})
	require.Equal(t, true, tup[2], "the table's process was caught opening the file")

	spec := backends.Spec{Kind: backends.KindDETS, Table: "migctl_crashed"}
	s, err := backends.Open(c, n, spec)
	require.NoError(t, err)
	cx, cancelCall := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelCall()
	_, err = s.Count(cx)
	require.ErrorIs(t, err, backends.ErrDETSOpening, "said at once, not waited for (%v)", err)
	require.Contains(t, err.Error(), "repairs the file")

	p := backends.Ping(cx, c, n, []backends.Spec{spec})
	require.Empty(t, p.Error)
	require.Len(t, p.Stores, 1)
	require.True(t, p.Stores[0].Exists)
	require.True(t, p.Stores[0].Opening, "ping shows the table as opening: %+v", p.Stores[0])

	// A probe (what an operator runs to see why a node is slow) looks at
	// the table's process while it opens; it used to wait in dets:info/2
	// until the open ended, past its call's timeout.
	pr, err := probe.Run(cx, agentapi.Migrate{C: c}, []string{n},
		probe.Options{DetsTable: "migctl_crashed", Duration: 300 * time.Millisecond, Interval: 50 * time.Millisecond})
	require.NoError(t, err)
	require.Empty(t, pr.Errors)
	var dets *probe.Proc
	for i := range pr.Procs {
		if pr.Procs[i].Proc == "dets" {
			dets = &pr.Procs[i]
		}
	}
	require.NotNil(t, dets, "the probe looked at the opening table's process: %+v", pr.Procs)
	t.Logf("probe of the opening table's process: %+v", *dets)

	// A consistency monitor left running (the two-week daemon) whose
	// check comes during the repair: the check fails at once with the
	// same error, /healthz says failing, and the monitor goes on (back-off,
	// next check). Its other store is a DETS table open as usual.
	other := filepath.Join(t.TempDir(), "other.dets")
	r = cl.Eval(0, `Self = self(),
	    H = spawn(fun() -> {ok, T} = dets:open_file(migctl_other, [{file, F}]), Self ! {open, T},
	                       receive stop -> dets:close(T) end end),
	    receive {open, _} -> H after 10000 -> timeout end`, map[string]erl.Term{"F": other})
	otherHolder, ok := r.(erl.Pid)
	require.True(t, ok, "%v", r)
	t.Cleanup(func() { _ = c.Send(otherHolder, erl.Atom("stop")) })
	tgt, err := backends.Open(c, n, backends.Spec{Kind: backends.KindDETS, Table: "migctl_other"})
	require.NoError(t, err)
	j, err := journal.Open(filepath.Join(t.TempDir(), "journal.db"), journal.Options{})
	require.NoError(t, err)
	mon, err := consistency.NewMonitor(consistency.MonitorConfig{Source: s, Target: tgt, Journal: j,
		Full: true, Interval: time.Second, Check: consistency.Options{Client: c}})
	require.NoError(t, err)
	require.NoError(t, mon.Open(cx))
	_, err = mon.CheckNow(cx)
	require.ErrorIs(t, err, backends.ErrDETSOpening, "the monitor's check during the repair")
	require.Equal(t, "failing", mon.Health().Status)

	// Nothing of migctl waits on the node: the agent unloads, and the
	// next migctl loads it and gets the same answer.
	require.NoError(t, c.UnloadAgent(cx, n))
	require.Equal(t, false, cl.Call(0, "code", "is_loaded", erl.Atom("migctl_agent")))
	_, err = s.Count(cx)
	require.ErrorIs(t, err, backends.ErrDETSOpening)

	// The open goes on (DETS repairs the file): then the rows are there.
	resume()
	require.Eventually(t, func() bool {
		got, err := s.Count(cx)
		return err == nil && got == rows
	}, 25*time.Second, 100*time.Millisecond, "the repaired table's count")
	// And the monitor's next check runs (the other table is empty: every
	// session is missing there, which it reports).
	rep, err := mon.CheckNow(cx)
	require.NoError(t, err)
	require.EqualValues(t, rows, rep.Count(consistency.KindMissingInTarget))
	require.Equal(t, "ok", mon.Health().Status)
}

// Describing a DETS store (ping, and every command's check that a table
// holds sessions) looks at one row. dets:first/1 found it by reading the
// file one slot at a time inside the DETS server: on an empty file made
// with min_no_slots 1,000,000 (the dev cluster's DETS files) that took
// 28 s, and held the application's own DETS calls all along. The test
// counts the work the DETS server does for the describe (its reductions),
// not time: a slot-by-slot scan of a million slots is millions of them.
func TestDescribeEmptyPresizedDETSDoesNotScanIt(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1})
	c := cl.Client()
	n := cl.Nodes[0].Name
	file := filepath.Join(t.TempDir(), "empty.dets")
	r := cl.Eval(0, `Self = self(),
	    Holder = spawn(fun() ->
	        {ok, T} = dets:open_file(migctl_empty, [{file, F}, {min_no_slots, 1000000}]),
	        Self ! {open, T},
	        receive stop -> dets:close(T) end
	    end),
	    receive {open, _} -> {Holder, dets_server:get_pid(migctl_empty)} after 60000 -> timeout end`,
		map[string]erl.Term{"F": file})
	tup, ok := r.(erl.Tuple)
	require.True(t, ok, "%v", r)
	t.Cleanup(func() { _ = c.Send(tup[0].(erl.Pid), erl.Atom("stop")) })
	reductions := func() int64 {
		return erl.Int64(cl.Call(0, "erlang", "process_info", tup[1], erl.Atom("reductions")).(erl.Tuple)[1])
	}
	s, err := backends.Open(c, n, backends.Spec{Kind: backends.KindDETS, Table: "migctl_empty"})
	require.NoError(t, err)
	_, err = s.Count(tctx(t)) // the agent loaded, the table found
	require.NoError(t, err)
	before := reductions()
	info, err := s.Describe(tctx(t))
	require.NoError(t, err)
	used := reductions() - before
	require.True(t, info.Exists)
	require.Zero(t, info.Size)
	require.Equal(t, "ok", info.Layout)
	require.Less(t, used, int64(200000), "the DETS server's reductions for one describe of an empty file")
	t.Logf("the DETS server used %d reductions for the describe", used)
}
