package migrate

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/testkit"
)

// A node whose store server is still in its init (erlmcp's opens its DETS
// file there, and after a crash DETS repairs the whole file first: 85 s
// for the big run's 1.68 GB) answers `phase show` at once, as down for
// the migration and why, instead of a call that waits out its timeout.
// The store server here is a stand-in registered under erlmcp's name
// whose init waits until the test lets it go, as a repair does.
func TestPhaseShowStoreServerStillStarting(t *testing.T) {
	ctx := tctx(t, 60*time.Second)
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Backend: "erlmcp_session_ets"})
	m := newMigrator(t, cl, newJournal(t))
	r := cl.Eval(0, `ok = supervisor:terminate_child(erlmcp_fixture_sup, erlmcp_session_store),
	    Lines = ["-module(migctl_test_slow_store).", "-behaviour(gen_server).",
	             "-export([init/1, handle_call/3, handle_cast/2]).",
	             "init([]) -> receive go -> {ok, s} end.",
	             "handle_call(_, _, S) -> {reply, {error, unknown_request}, S}.",
	             "handle_cast(_, S) -> {noreply, S}."],
	    Forms = [begin {ok, T, _} = erl_scan:string(L), {ok, F} = erl_parse:parse_form(T), F end || L <- Lines],
	    {ok, M, Bin} = compile:forms(Forms, []),
	    {module, M} = code:load_binary(M, "slow.beam", Bin),
	    Starter = spawn(fun() -> gen_server:start({local, erlmcp_session_store}, M, [], []) end),
	    W = fun W(0) -> timeout; W(K) -> case whereis(erlmcp_session_store) of undefined -> timer:sleep(10), W(K - 1); P -> P end end,
	    {Starter, W(500)}`, nil)
	tup, ok := r.(erl.Tuple)
	require.True(t, ok, "%v", r)
	server, ok := tup[1].(erl.Pid)
	require.True(t, ok, "the stand-in registered: %v", r)
	t.Cleanup(func() { _ = cl.Client().Send(server, erl.Atom("go")) })

	st, err := m.ShowPhase(ctx)
	require.NoError(t, err)
	require.Len(t, st.Nodes, 1)
	n := st.Nodes[0]
	require.False(t, n.Reachable, "down for the migration while its store server starts")
	require.Contains(t, n.Error, "still starting")
	require.Equal(t, []string{cl.Nodes[0].Name}, st.Down)
	require.ErrorIs(t, st.Ready(), ErrNodeDown)

	// Once init returns, the same node answers (an erlmcp store server,
	// no hybrid: installed false).
	require.NoError(t, cl.Client().Send(server, erl.Atom("go")))
	require.Eventually(t, func() bool {
		st, err := m.ShowPhase(ctx)
		return err == nil && st.Nodes[0].Reachable && st.Nodes[0].Error == ""
	}, 20*time.Second, 100*time.Millisecond)
}
