package migrate

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/testkit"
)

// TestMnesiaCleanupOffTheStoreServer: from phase1 on the hybrid also cleans
// the Mnesia side of expired sessions, and erlmcp's Mnesia backend does it
// inside the store server, reading every key and every row in one
// transaction. Above mnesia_cleanup_async_above rows the hybrid cleans
// that side from a process of its own instead. Here, with traffic going
// through the store server: the cleanup request returns without cleaning
// (0), every planted expired session is deleted from the table by the
// cleaner, no live one is, and no acknowledged write is lost.
func TestMnesiaCleanupOffTheStoreServer(t *testing.T) {
	env := append(hybridEnv("erlmcp_session_dets", "erlmcp_session_mnesia", "phase1"),
		"{backend_opts, #{mnesia_cleanup_async_above => 1000}}")
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Mnesia: true, Backend: "erlmcp_session_backend_hybrid", AppEnv: env})
	r := cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("mnesia"), erl.Map{}, 20000, 31)
	require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(20000)}, r)
	// 3,000 sessions that expired an hour ago, in Mnesia only.
	planted := evalTerm(t, cl, 0, `
		Old = erlang:system_time(millisecond) - 3600000,
		[ok = mnesia:dirty_write({erlmcp_session, Id,
		                          #{id => Id, created_at => Old, last_accessed => Old, timeout_ms => 1000, metadata => #{}},
		                          Old})
		 || I <- lists:seq(1, 3000), Id <- [<<"expired-", (integer_to_binary(I))/binary>>]],
		mnesia:table_info(erlmcp_session, size)`, nil)
	require.EqualValues(t, 23000, planted)

	startLoad(t, cl, 200, 20000)
	defer closeLoad(cl)
	time.Sleep(time.Second)
	// The request goes through the store server as the timer's does. The
	// DETS side (the traffic's sessions only) has nothing expired; erlmcp's
	// Mnesia cleanup in the server would answer 3000.
	require.Zero(t, requestCleanup(t, cl), "the store server cleaned the Mnesia side itself")

	var left int64
	require.Eventually(t, func() bool {
		left = erl.Int64(evalTerm(t, cl, 0, `
			length([I || I <- mnesia:dirty_all_keys(erlmcp_session), is_binary(I),
			             binary:longest_common_prefix([I, <<"expired-">>]) =:= 8])`, nil))
		return left == 0
	}, time.Minute, 500*time.Millisecond, "expired sessions left in the table: %d", left)

	time.Sleep(500 * time.Millisecond)
	stats := stopLoad(t, cl)
	t.Logf("load: %s", describe(stats[0]))
	require.Greater(t, mapInt(stats[0], "ops"), int64(100), "traffic ran")
	t.Logf("client errors: %d", mapInt(stats[0], "errors"))
	counters := evalTerm(t, cl, 0, `erlmcp_session_backend_hybrid:counters()`, nil)
	t.Logf("counters: %v", counters)
	require.EqualValues(t, 3000, mapInt(counters, "mnesia_cleanup_deleted"))
	require.GreaterOrEqual(t, mapInt(counters, "mnesia_cleanup_runs"), int64(1))
	live := evalTerm(t, cl, 0, `mnesia:table_info(erlmcp_session, size)`, nil)
	require.GreaterOrEqual(t, erl.Int64(live), int64(20000), "live sessions were deleted")
	// Every acknowledged write is in Mnesia once the deferred writes are in.
	require.Eventually(t, func() bool {
		return erl.Int64(evalTerm(t, cl, 0, `erlmcp_session_backend_hybrid:dual_writes_pending()`, nil)) == 0
	}, 30*time.Second, 100*time.Millisecond)
	v := verifyLoad(t, cl, "{mnesia, erlmcp_session}")
	require.Zero(t, mapInt(v[0], "lost"), "%v", v[0])
}

// TestMnesiaCleanupKeepsRefreshedSessions: the cleaner lists the expired
// ids, then deletes; a session the application refreshed in between must
// survive. delete_expired reads each id again in its transaction.
func TestMnesiaCleanupKeepsRefreshedSessions(t *testing.T) {
	env := hybridEnv("erlmcp_session_dets", "erlmcp_session_mnesia", "phase1")
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Mnesia: true, Backend: "erlmcp_session_backend_hybrid", AppEnv: env})
	r := evalTerm(t, cl, 0, `
		T = erlmcp_session,
		Old = erlang:system_time(millisecond) - 3600000,
		S = fun(Id, LA) -> {T, Id, #{id => Id, created_at => Old, last_accessed => LA, timeout_ms => 1000, metadata => #{}}, LA} end,
		[ok = mnesia:dirty_write(S(Id, Old)) || Id <- [<<"a">>, <<"b">>, <<"c">>, <<"d">>]],
		%% b is refreshed and c deleted after the listing; d never expires
		ok = mnesia:dirty_write(S(<<"b">>, erlang:system_time(millisecond))),
		ok = mnesia:dirty_delete(T, <<"c">>),
		ok = mnesia:dirty_write({T, <<"d">>, #{id => <<"d">>, created_at => Old, last_accessed => Old, timeout_ms => infinity, metadata => #{}}, Old}),
		R = erlmcp_session_backend_hybrid:delete_expired(T, [<<"a">>, <<"b">>, <<"c">>, <<"d">>], erlang:system_time(millisecond)),
		#{result => R, a => mnesia:dirty_read(T, <<"a">>), b => length(mnesia:dirty_read(T, <<"b">>)),
		  d => length(mnesia:dirty_read(T, <<"d">>)),
		  none => erlmcp_session_backend_hybrid:delete_expired(T, [], erlang:system_time(millisecond))}`, nil)
	t.Logf("%v", r)
	m := r.(erl.Map)
	atomic := func(k string) int64 {
		tp, ok := m[erl.Atom(k)].(erl.Tuple)
		require.True(t, ok && len(tp) == 2 && tp[0] == erl.Atom("atomic"), "%s: %#v", k, m[erl.Atom(k)])
		return erl.Int64(tp[1])
	}
	require.EqualValues(t, 1, atomic("result"), "deleted")
	require.Equal(t, erl.List{}, m[erl.Atom("a")])
	require.EqualValues(t, 1, mapInt(r, "b"), "a session refreshed after the listing was deleted")
	require.EqualValues(t, 1, mapInt(r, "d"), "a session without a timeout was deleted")
	require.EqualValues(t, 0, atomic("none"))
}

// TestMnesiaCleanupOnANodeWithoutACopy: during a backfill with
// --replicate-after the other nodes' replicas are removed and they read
// the table remotely, where mnesia:table_info(T, size) answers 0. The
// hybrid took that for a small table and ran erlmcp's cleanup in the
// store server: a remote select over the whole table (5 s at 1.8M
// sessions in the big run, all the node's queued client calls timing out
// together). A node without a copy cleans from the cleaner whatever the
// size: the request answers 0 and the cleaner deletes what expired.
func TestMnesiaCleanupOnANodeWithoutACopy(t *testing.T) {
	env := hybridEnv("erlmcp_session_dets", "erlmcp_session_mnesia", "phase1")
	cl := testkit.Start(t, testkit.Options{Nodes: 2, Mnesia: true, Backend: "erlmcp_session_backend_hybrid", AppEnv: env})
	r := cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("mnesia"), erl.Map{}, 2000, 31)
	require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(2000)}, r)
	require.Equal(t, erl.Tuple{erl.Atom("atomic"), erl.Atom("ok")},
		cl.Eval(0, `mnesia:del_table_copy(erlmcp_session, N)`, map[string]erl.Term{"N": erl.Atom(cl.Nodes[1].Name)}))
	// 300 sessions that expired an hour ago, well below the size at which
	// a node with a copy cleans off the store server.
	require.Equal(t, erl.Atom("ok"), cl.Eval(0, `
		Old = erlang:system_time(millisecond) - 3600000,
		[ok = mnesia:dirty_write({erlmcp_session, Id,
		                          #{id => Id, created_at => Old, last_accessed => Old, timeout_ms => 1000, metadata => #{}},
		                          Old})
		 || I <- lists:seq(1, 300), Id <- [<<"expired-", (integer_to_binary(I))/binary>>]],
		ok`, nil))
	require.EqualValues(t, 0, erl.Int64(cl.Eval(1, `mnesia:table_info(erlmcp_session, size)`, nil)),
		"a node without a copy is told 0")

	reply := cl.Eval(1, `gen_server:call(erlmcp_session_backend_hybrid:server(), cleanup_expired, 60000)`, nil).(erl.Tuple)
	require.Equal(t, erl.Atom("ok"), reply[0])
	require.Zero(t, erl.Int64(reply[1]), "node 2's store server ran the remote cleanup itself")
	var deleted int64
	require.Eventually(t, func() bool {
		deleted = mapInt(evalTerm(t, cl, 1, `erlmcp_session_backend_hybrid:counters()`, nil), "mnesia_cleanup_deleted")
		return deleted == 300
	}, time.Minute, 200*time.Millisecond, "deleted by node 2's cleaner: %d", deleted)
	require.EqualValues(t, 2000, erl.Int64(cl.Eval(0, `mnesia:table_info(erlmcp_session, size)`, nil)), "live sessions kept")
}
