package migrate

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/testkit"
)

// TestDetsCleanupOffTheStoreServer: erlmcp's DETS backend deletes expired
// sessions by reading the whole file inside the store server; at 1.4M
// sessions that held node 1's server 18-33 s of every minute of the big
// run, and its clients timed out. Above dets_cleanup_async_above objects
// the hybrid cleans the DETS side from a process of its own. Here, with
// traffic going through the store server: the cleanup request returns
// without the scan, every planted expired session is deleted from the
// file by the cleaner, no live one is, and no acknowledged write is lost.
func TestDetsCleanupOffTheStoreServer(t *testing.T) {
	env := append(hybridEnv("erlmcp_session_dets", "erlmcp_session_mnesia", "phase1"),
		"{backend_opts, #{dets_cleanup_async_above => 1000}}")
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Mnesia: true, Backend: "erlmcp_session_backend_hybrid", AppEnv: env})
	r := cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("dets"), erl.Map{}, 20000, 31)
	require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(20000)}, r)
	// 3,000 sessions that expired an hour ago, in the file only (as
	// sessions left from before the migration are).
	planted := evalTerm(t, cl, 0, `
		Old = erlang:system_time(millisecond) - 3600000,
		Objs = [{<<"expired-", (integer_to_binary(I))/binary>>,
		         #{id => <<"expired-", (integer_to_binary(I))/binary>>, created_at => Old,
		           last_accessed => Old, timeout_ms => 1000, metadata => #{}}} || I <- lists:seq(1, 3000)],
		ok = dets:insert(erlmcp_sessions_dets, Objs),
		dets:info(erlmcp_sessions_dets, no_objects)`, nil)
	require.EqualValues(t, 23000, planted)

	startLoad(t, cl, 200, 20000)
	defer closeLoad(cl)
	time.Sleep(time.Second)
	// The request goes through the store server as the timer's does.
	require.Zero(t, requestCleanup(t, cl), "the store server ran the scan itself")

	// A run's traversal of the file is not fixed while the clients write
	// (DETS grows its hash table under their inserts): what one run missed
	// the next deletes. The timer is off here, so the test asks again, as
	// the timer would, while planted sessions are left (one CI run: the
	// only run missed some, and they stayed a minute).
	var left int64
	last := time.Now()
	ok := assert.Eventually(t, func() bool {
		left = erl.Int64(evalTerm(t, cl, 0, `
			length([I || {I, _} <- dets:select(erlmcp_sessions_dets, [{'_', [], ['$_']}]),
			             binary:longest_common_prefix([I, <<"expired-">>]) =:= 8])`, nil))
		if left > 0 && time.Since(last) > 5*time.Second {
			require.Zero(t, requestCleanup(t, cl), "the store server ran the scan itself")
			last = time.Now()
		}
		return left == 0
	}, time.Minute, 500*time.Millisecond)
	if !ok {
		t.Logf("counters: %v; cleaner: %v", evalTerm(t, cl, 0, `erlmcp_session_backend_hybrid:counters()`, nil),
			evalTerm(t, cl, 0, `case whereis(migctl_dets_cleaner) of undefined -> none; P -> process_info(P, [status, current_stacktrace]) end`, nil))
	}
	require.True(t, ok, "expired sessions left in the file after a minute: %d", left)

	time.Sleep(500 * time.Millisecond)
	stats := stopLoad(t, cl)
	t.Logf("load: %s", describe(stats[0]))
	require.Greater(t, mapInt(stats[0], "ops"), int64(100), "traffic ran")
	// Client timeouts are logged, not asserted: at 23,000 sessions the
	// scan erlmcp's cleanup would make takes milliseconds, so a timeout
	// here says how loaded the machine is, not where the cleanup ran (one
	// CI run beside a 5-node big run at load 28 had 3). What is asserted is
	// where it ran: the request answered 0 without deleting, and the
	// cleaner's counters hold the deletions. `make bench-cleanup` measures
	// what that is worth to clients at 1.4M sessions.
	t.Logf("client errors: %d", mapInt(stats[0], "errors"))
	counters := evalTerm(t, cl, 0, `erlmcp_session_backend_hybrid:counters()`, nil)
	t.Logf("counters: %v", counters)
	require.EqualValues(t, 3000, mapInt(counters, "dets_cleanup_deleted"))
	require.GreaterOrEqual(t, mapInt(counters, "dets_cleanup_runs"), int64(1))
	require.Positive(t, mapInt(counters, "dets_cleanup_paused_ms"), "the cleaner pauses between its chunks")
	live := evalTerm(t, cl, 0, `dets:info(erlmcp_sessions_dets, no_objects)`, nil)
	require.GreaterOrEqual(t, erl.Int64(live), int64(20000), "live sessions were deleted")
	v := verifyLoad(t, cl, "{dets, erlmcp_sessions_dets}")
	require.Zero(t, mapInt(v[0], "lost"))
}

// TestDetsCleanupKeepsRewrittenSessions: the cleaner reads a chunk, then
// deletes; a session the application rewrote in between must survive.
// delete_unchanged deletes an id only while the file holds exactly the
// object that was read.
func TestDetsCleanupKeepsRewrittenSessions(t *testing.T) {
	env := hybridEnv("erlmcp_session_dets", "erlmcp_session_mnesia", "phase1")
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Mnesia: true, Backend: "erlmcp_session_backend_hybrid", AppEnv: env})
	r := evalTerm(t, cl, 0, `
		T = erlmcp_sessions_dets,
		Old = erlang:system_time(millisecond) - 3600000,
		S = fun(Id, LA) -> #{id => Id, created_at => Old, last_accessed => LA, timeout_ms => 1000, metadata => #{}} end,
		Read = [{<<"a">>, S(<<"a">>, Old)}, {<<"b">>, S(<<"b">>, Old)}, {<<"c">>, S(<<"c">>, Old)}],
		ok = dets:insert(T, Read),
		%% b is refreshed and c deleted after the read
		ok = dets:insert(T, {<<"b">>, S(<<"b">>, erlang:system_time(millisecond))}),
		ok = dets:delete(T, <<"c">>),
		N = erlmcp_session_backend_hybrid:delete_unchanged(T, Read),
		#{deleted => N, a => dets:lookup(T, <<"a">>), b => length(dets:lookup(T, <<"b">>)),
		  none => erlmcp_session_backend_hybrid:delete_unchanged(T, [])}`, nil)
	t.Logf("%v", r)
	require.EqualValues(t, 1, mapInt(r, "deleted"))
	require.Equal(t, erl.List{}, r.(erl.Map)[erl.Atom("a")])
	require.EqualValues(t, 1, mapInt(r, "b"), "a session rewritten after the read was deleted")
	require.EqualValues(t, 0, mapInt(r, "none"))
}

// requestCleanup asks node 0's store server for a cleanup, as its timer
// does, and returns the count it answered ({ok, N}).
func requestCleanup(t *testing.T, cl *testkit.Cluster) int64 {
	t.Helper()
	r := evalTerm(t, cl, 0, `
		T0 = erlang:monotonic_time(millisecond),
		R = gen_server:call(erlmcp_session_backend_hybrid:server(), cleanup_expired, 60000),
		{R, erlang:monotonic_time(millisecond) - T0}`, nil)
	t.Logf("cleanup request (reply, ms): %v", r)
	reply, ok := r.(erl.Tuple)[0].(erl.Tuple)
	require.True(t, ok && len(reply) == 2 && reply[0] == erl.Atom("ok"), "%v", r)
	return erl.Int64(reply[1])
}
