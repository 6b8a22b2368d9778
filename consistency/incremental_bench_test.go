package consistency_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/ergo-services/ergo/etf"
	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/backends"
	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/testkit"
)

// TestBenchIncremental is issue 13's incremental verify at
// MIGCTL_BENCH_INCR_N sessions (default 1,000,000) with
// MIGCTL_BENCH_INCR_CHANGES changes between cycles (default 1,000): a DETS
// file on node 0, the Mnesia copy replicated on nodes 0 and 1, the change
// record read on node 1. Each run changes that many sessions (both stores,
// as dual-write does), then measures one incremental cycle (time, bytes
// on the wire) and the native reference, migctl_incr:native: the same
// cycle as one Erlang function on node 1 (changed keys, both sides'
// digests, the DETS side through erpc). Medians of MIGCTL_BENCH_RUNS
// (default 5); goals: a cycle <= 0.2 s and <= 100 KB.
func TestBenchIncremental(t *testing.T) {
	if os.Getenv("MIGCTL_BENCH") == "" {
		t.Skip("set MIGCTL_BENCH=1 to run the incremental verify benchmark")
	}
	n := envInt("MIGCTL_BENCH_INCR_N", 1000000)
	changes := envInt("MIGCTL_BENCH_INCR_CHANGES", 1000)
	runs := envInt("MIGCTL_BENCH_RUNS", 5)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	cl := testkit.Start(t, testkit.Options{Nodes: 2, Mnesia: true, Backend: "erlmcp_session_dets",
		AppEnv: []string{"{session_cleanup_interval, infinity}"}})
	file := filepath.Join(cl.Nodes[0].Dir, "bench_sessions.dets")
	t0 := time.Now()
	// As TestBenchConsistency: a DETS file sized for n, copied to Mnesia on
	// the node in transactions of 1,000.
	require.Equal(t, etf.Atom("ok"), cl.Eval(0, `P = spawn(fun() -> try
			R = erlmcp_fixture_seed:seed(dets, #{file_path => F, table_name => bench_sessions}, N, 42),
			persistent_term:put(migctl_bench_seed, R),
			{ok, _} = dets:open_file(bench_sessions, [{file, F}, {access, read}]),
			Copy = fun(Rows) ->
				{atomic, ok} = mnesia:transaction(fun() -> mnesia:write_lock_table(erlmcp_session),
					lists:foreach(fun({I, S}) -> mnesia:write({erlmcp_session, I, S, 0}) end, Rows) end) end,
			Rest = dets:foldl(fun(Row, Acc) when length(Acc) >= 999 -> Copy([Row | Acc]), [];
			                     (Row, Acc) -> [Row | Acc] end, [], bench_sessions),
			Copy(Rest),
			persistent_term:put(migctl_bench_ids, list_to_tuple(dets:select(bench_sessions, [{{'$1', '_'}, [], ['$1']}]))),
			dets:close(bench_sessions),
			%% One owner keeps the file open read-write for the whole
			%% bench (migctl's agent then uses it by name): the changes
			%% below write it.
			Me = self(),
			spawn(fun() -> {ok, _} = dets:open_file(bench_sessions, [{file, F}, {type, set}, {repair, false}]),
			               Me ! opened, receive stop -> ok end end),
			receive opened -> ok after 600000 -> exit(open_timeout) end,
			persistent_term:put(migctl_bench_copied, true)
		catch C:E -> persistent_term:put(migctl_bench_copied, iolist_to_binary(io_lib:format("~p:~0P", [C, E, 20]))) end end),
		ok`, map[string]erl.Term{"F": file, "N": n}))
	for {
		done := cl.Call(0, "persistent_term", "get", etf.Atom("migctl_bench_copied"), false)
		if done == true {
			break
		}
		if b, ok := done.([]byte); ok {
			t.Fatalf("setup failed: %s", b)
		}
		if r := cl.Call(0, "persistent_term", "get", etf.Atom("migctl_bench_seed"), etf.Atom("pending")); r != etf.Atom("pending") {
			require.Equal(t, etf.Tuple{etf.Atom("ok"), int64(n)}, r)
		}
		time.Sleep(time.Second)
	}
	t.Logf("setup %d sessions in %s", n, time.Since(t0))
	// The monitor starts after the backfill: the record starts then too
	// (a fresh recorder on node 1, with room for every key, as a node
	// configured with recorder_max_keys above the session count has).
	require.Equal(t, etf.Atom("ok"), cl.Eval(1, `ok = supervisor:terminate_child(migctl_node_sup, migctl_recorder),
		application:set_env(migctl_node, recorder_max_keys, 4000000),
		{ok, _} = supervisor:restart_child(migctl_node_sup, migctl_recorder),
		W = fun W(0) -> timeout; W(K) ->
			case migctl_recorder:info() of
				#{tables := [#{subscribed := true}]} -> ok;
				_ -> timer:sleep(20), W(K - 1)
			end end, W(500)`, nil))
	src, err := backends.Open(cl.Client(), cl.Nodes[0].Name, backends.Spec{Kind: backends.KindDETS, Table: "bench_sessions", File: file})
	require.NoError(t, err)
	tgt, err := backends.Open(cl.Client(), cl.Nodes[1].Name, backends.DefaultSpec(backends.KindMnesia))
	require.NoError(t, err)
	opts := consistency.Options{Client: cl.Client(), RecheckDelay: 300 * time.Millisecond, Rechecks: 1}
	// Overlap 1 ms: the bench changes exactly `changes` keys between
	// cycles (the default 1 s overlap would count the previous batch again
	// when it was made within the second before the cycle).
	inc := consistency.IncrementalOptions{Overlap: time.Millisecond}
	cur, err := consistency.MarkCursor(ctx, src, tgt, opts)
	require.NoError(t, err)

	var cyc, nat []time.Duration
	var wire []int64
	for run := 0; run < runs; run++ {
		// The changes, made on node 0 to both stores as dual-write does;
		// then wait until node 1 recorded them (remote dirty writes are
		// applied asynchronously).
		require.Equal(t, etf.Atom("ok"), cl.Eval(0, `Ids = persistent_term:get(migctl_bench_ids),
			Pick = lists:usort([element(rand:uniform(tuple_size(Ids)), Ids) || _ <- lists:seq(1, 2 * C)]),
			lists:foreach(fun(Id) ->
				[{_, S}] = dets:lookup(bench_sessions, Id),
				M = maps:get(metadata, S),
				S2 = S#{last_accessed => erlang:system_time(millisecond), metadata => M#{<<"request_count">> => R}},
				ok = dets:insert(bench_sessions, {Id, S2}),
				ok = mnesia:dirty_write({erlmcp_session, Id, S2, 0})
			end, lists:sublist(Pick, C))`, map[string]erl.Term{"C": changes, "R": run}))
		require.Equal(t, etf.Atom("ok"), cl.Eval(1, `W = fun W(0) -> timeout; W(K) ->
				case length(migctl_recorder:changed_since(erlmcp_session, Since)) >= C of
					true -> ok;
					false -> timer:sleep(20), W(K - 1)
				end end, W(1000)`, map[string]erl.Term{"Since": cur.Since, "C": changes}))
		from := cur.Since - inc.Overlap.Milliseconds()
		measureNative := func() {
			ch, differ, d, err := consistency.NativeIncremental(ctx, cl.Client(), src, tgt, from)
			require.NoError(t, err)
			require.GreaterOrEqual(t, ch, changes)
			require.Zero(t, differ)
			nat = append(nat, d)
		}
		if run%2 == 1 {
			measureNative()
		}
		res, err := consistency.Incremental(ctx, src, tgt, cur, opts, inc)
		require.NoError(t, err)
		require.Empty(t, res.Gap)
		require.GreaterOrEqual(t, res.Changed, changes)
		require.True(t, res.Report.Clean(), "%v", res.Report.Samples)
		cyc = append(cyc, res.Report.Duration)
		wire = append(wire, res.Report.BytesMoved)
		if run%2 == 0 {
			measureNative()
		}
		t.Logf("run %d: cycle %s, %d bytes, %d round trips; native %s", run, res.Report.Duration, res.Report.BytesMoved, res.Report.RoundTrips, nat[len(nat)-1])
		cur = res.Next
	}
	mc, mn, mw := median(cyc), median(nat), medianInt(wire)
	t.Logf("BENCH incremental rows=%d changed=%d cycle=%.3fs bytes=%d native=%.3fs ratio=%.2f (goals: cycle <= 0.200s, bytes <= 100000; medians of %d runs)",
		n, changes, mc.Seconds(), mw, mn.Seconds(), mc.Seconds()/mn.Seconds(), runs)
}

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
		return v
	}
	return def
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func medianInt(d []int64) int64 {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
