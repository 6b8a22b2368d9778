package consistency_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

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
// record read on node 1, which recorded the whole copy (as a monitor's
// recorder holds every key written within its window: the record's query
// must not cost a pass over them). Each run changes that many sessions
// (both stores, as dual-write does), then measures one incremental cycle
// (time, bytes on the wire) and the native reference, migctl_incr:native:
// the same cycle as one Erlang function on node 1 (changed keys, both
// sides' digests, the DETS side through erpc), and where the cycle's time
// goes (each node-side part timed on its node, and a round trip). Medians
// of MIGCTL_BENCH_RUNS (default 5); goals: a cycle <= 0.2 s and <= 100 KB.
//
// Then, on the same 1M stores, a sample check of 10,000 sessions (drawn by
// DETS slots, consistency/detsslots.go) quiet and under 1,000 writes/s to
// both stores on node 0, next to its native reference (the same two
// node-side listings timed on their nodes, the slower one); goal < 1 s.
// MIGCTL_BENCH_INCR_PARTS (incr,sample; default both) picks them.
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
	// A fresh recorder on node 1 with room for every key (a node configured
	// with recorder_max_keys above the session count): it records the copy.
	require.Equal(t, erl.Atom("ok"), cl.Eval(1, `ok = supervisor:terminate_child(migctl_node_sup, migctl_recorder),
		application:set_env(migctl_node, recorder_max_keys, 4000000),
		{ok, _} = supervisor:restart_child(migctl_node_sup, migctl_recorder),
		W = fun W(0) -> timeout; W(K) ->
			case migctl_recorder:info() of
				#{tables := [#{subscribed := true}]} -> ok;
				_ -> timer:sleep(20), W(K - 1)
			end end, W(500)`, nil))
	t0 := time.Now()
	// As TestBenchConsistency: a DETS file sized for n, copied to Mnesia on
	// the node in transactions of 1,000.
	require.Equal(t, erl.Atom("ok"), cl.Eval(0, `P = spawn(fun() -> try
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
		done := cl.Call(0, "persistent_term", "get", erl.Atom("migctl_bench_copied"), false)
		if done == true {
			break
		}
		if b, ok := done.([]byte); ok {
			t.Fatalf("setup failed: %s", b)
		}
		if r := cl.Call(0, "persistent_term", "get", erl.Atom("migctl_bench_seed"), erl.Atom("pending")); r != erl.Atom("pending") {
			require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(n)}, r)
		}
		time.Sleep(time.Second)
	}
	t.Logf("setup %d sessions in %s", n, time.Since(t0))
	// The recorder on node 1 records the copy: then wait until it has (node
	// 1 applies node 0's commits asynchronously).
	require.Equal(t, erl.Atom("ok"), cl.Eval(1, `W = fun W(0) -> timeout; W(K) ->
			_ = migctl_recorder:lookup(erlmcp_session, []),
			case maps:get(keys, migctl_recorder:info()) >= N of
				true -> ok;
				false -> timer:sleep(100), W(K - 1)
			end end, W(3000)`, map[string]erl.Term{"N": n}))
	t.Logf("recorder on node 1: %v", cl.Eval(1, `maps:with([keys, memory_bytes], migctl_recorder:info())`, nil))
	src, err := backends.Open(cl.Client(), cl.Nodes[0].Name, backends.Spec{Kind: backends.KindDETS, Table: "bench_sessions", File: file})
	require.NoError(t, err)
	tgt, err := backends.Open(cl.Client(), cl.Nodes[1].Name, backends.DefaultSpec(backends.KindMnesia))
	require.NoError(t, err)
	part := func(p string) bool {
		v := os.Getenv("MIGCTL_BENCH_INCR_PARTS")
		return v == "" || slices.Contains(strings.Split(v, ","), p)
	}
	if part("incr") {
		benchIncrementalCycles(ctx, t, cl, src, tgt, file, n, changes, runs)
	}
	if part("sample") {
		benchSampleUnderLoad(ctx, t, cl, src, tgt, file, n, runs)
	}
}

func benchIncrementalCycles(ctx context.Context, t *testing.T, cl *testkit.Cluster, src, tgt backends.Store, file string, n, changes, runs int) {
	opts := consistency.Options{Client: cl.Client(), RecheckDelay: 300 * time.Millisecond, Rechecks: 1}
	// Overlap 1 ms: the bench changes exactly `changes` keys between
	// cycles (the default 1 s overlap would count the previous batch again
	// when it was made within the second before the cycle).
	inc := consistency.IncrementalOptions{Overlap: time.Millisecond}
	cur, err := consistency.MarkCursor(ctx, src, tgt, opts)
	require.NoError(t, err)

	var cyc, nat, query, recDigests, detsDigests, trip []time.Duration
	var wire []int64
	for run := 0; run < runs; run++ {
		// The changes, made on node 0 to both stores as dual-write does;
		// then wait until node 1 recorded them (remote dirty writes are
		// applied asynchronously).
		require.Equal(t, erl.Atom("ok"), cl.Eval(0, `Ids = persistent_term:get(migctl_bench_ids),
			Pick = lists:usort([element(rand:uniform(tuple_size(Ids)), Ids) || _ <- lists:seq(1, 2 * C)]),
			lists:foreach(fun(Id) ->
				[{_, S}] = dets:lookup(bench_sessions, Id),
				M = maps:get(metadata, S),
				S2 = S#{last_accessed => erlang:system_time(millisecond), metadata => M#{<<"request_count">> => R}},
				ok = dets:insert(bench_sessions, {Id, S2}),
				ok = mnesia:dirty_write({erlmcp_session, Id, S2, 0})
			end, lists:sublist(Pick, C))`, map[string]erl.Term{"C": changes, "R": run}))
		require.Equal(t, erl.Atom("ok"), cl.Eval(1, `W = fun W(0) -> timeout; W(K) ->
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
		require.Zero(t, res.Suspects, "the sides' digests agree at first look on quiet stores")
		cyc = append(cyc, res.Report.Duration)
		wire = append(wire, res.Report.BytesMoved)
		if run%2 == 0 {
			measureNative()
		}
		// Where a cycle's time goes: each node-side part on its node (the
		// record's query and the Mnesia digests on node 1, the DETS
		// digests on node 0), and one round trip to a node.
		b := cl.Eval(1, `{Tq, Keys} = timer:tc(fun() -> [K || K <- migctl_recorder:changed_since(erlmcp_session, From), is_binary(K)] end),
			Bin = iolist_to_binary([[<<(byte_size(I)):32>>, I] || I <- Keys]),
			{Tm, {ok, _, _}} = timer:tc(fun() -> migctl_check:digests_of({mnesia, erlmcp_session}, Bin) end),
			{Tq, Tm, Bin, zlib:compress([[<<(byte_size(I)):16>>, I] || I <- Keys])}`, map[string]erl.Term{"From": from}).(erl.Tuple)
		// The DETS side as the cycle reads it (migctl_incr:digests_at). The
		// cycle or the native run before it paid the DETS server's delayed
		// writes of the changes (the first read after them does).
		td := cl.Eval(0, `{T, {ok, _, _}} = timer:tc(fun() -> migctl_incr:digests_at({dets, bench_sessions, F, false, self()}, Z) end), T`,
			map[string]erl.Term{"F": file, "Z": b[3]})
		t1 := time.Now()
		_, err = cl.Client().Agent(ctx, cl.Nodes[1].Name, "migctl_incr:version")
		require.NoError(t, err)
		trip = append(trip, time.Since(t1))
		us := func(x erl.Term) time.Duration { return time.Duration(erl.Int64(x)) * time.Microsecond }
		query, recDigests = append(query, us(b[0])), append(recDigests, us(b[1]))
		detsDigests = append(detsDigests, us(td))
		t.Logf("run %d: cycle %s, %d bytes, %d round trips; native %s; parts: record query %s, Mnesia digests %s, DETS digests %s, round trip %s",
			run, res.Report.Duration, res.Report.BytesMoved, res.Report.RoundTrips, nat[len(nat)-1], query[run], recDigests[run], detsDigests[run], trip[run])
		cur = res.Next
	}
	mc, mn, mw := median(cyc), median(nat), medianInt(wire)
	t.Logf("BENCH incremental rows=%d changed=%d cycle=%.3fs bytes=%d native=%.3fs ratio=%.2f (goals: cycle <= 0.200s, bytes <= 100000; medians of %d runs; %s)",
		n, changes, mc.Seconds(), mw, mn.Seconds(), mc.Seconds()/mn.Seconds(), runs, loadavg())
	t.Logf("BENCH incremental parts (medians, each on its node): record query %s, Mnesia digests %s, DETS digests %s, one round trip %s",
		median(query), median(recDigests), median(detsDigests), median(trip))
}

// benchSampleUnderLoad: a 10,000-session sample check on the 1M stores,
// quiet, then under about 1,000 writes/s to both stores on node 0 (a
// writer process, stopped by pid). The native reference is the same two
// node-side listings (the DETS slots on node 0, the Mnesia listing of the
// same slots on node 1) timed on their nodes: the slower of the two, as
// they run at once.
func benchSampleUnderLoad(ctx context.Context, t *testing.T, cl *testkit.Cluster, src, tgt backends.Store, file string, n, runs int) {
	so := consistency.Options{Client: cl.Client(), Sample: 10000, RecheckDelay: 300 * time.Millisecond, Rechecks: 1}
	native := func() (time.Duration, string) {
		r := cl.Eval(0, `Spec = {dets, bench_sessions, F, false, self()},
			{ok, Next, phash2} = migctl_check:dets_next(Spec),
			K = (10000 * Next + N - 1) div N,
			Slots = iolist_to_binary([<<S:32>> || S <- lists:usort([rand:uniform(Next) - 1 || _ <- lists:seq(1, K)])]),
			{T, {ok, _, _, _}} = timer:tc(fun() -> migctl_check:dets_slot_rows(Spec, Slots, Next) end),
			{T, Slots, Next}`, map[string]erl.Term{"F": file, "N": n}).(erl.Tuple)
		tl := cl.Eval(1, `{T, {ok, _, _, _}} = timer:tc(fun() -> migctl_check:dets_slot_listing({mnesia, erlmcp_session}, Slots, Next) end), T`,
			map[string]erl.Term{"Slots": r[1], "Next": r[2]})
		d, l := time.Duration(erl.Int64(r[0]))*time.Microsecond, time.Duration(erl.Int64(tl))*time.Microsecond
		return max(d, l), fmt.Sprintf("DETS slots %s, Mnesia listing %s", d, l)
	}
	measure := func(label string) {
		var ds, nat []time.Duration
		for run := 0; run < runs; run++ {
			rep, err := consistency.Check(ctx, src, tgt, so)
			require.NoError(t, err)
			ds = append(ds, rep.Duration)
			d, parts := native()
			nat = append(nat, d)
			t.Logf("sample %s run %d: %s (listing %s), %d sessions, %d bytes, %d differences; native %s (%s)",
				label, run, rep.Duration, rep.Phases.Listing, rep.Processed, rep.BytesMoved, len(rep.Differences), d, parts)
			if label == "quiet" {
				require.True(t, rep.Clean(), "%v", rep.Samples)
			}
		}
		m, mn := median(ds), median(nat)
		t.Logf("BENCH sample-10000 %s rows=%d check=%.3fs native=%.3fs ratio=%.2f (goal < 1s; medians of %d runs; %s)",
			label, n, m.Seconds(), mn.Seconds(), m.Seconds()/mn.Seconds(), runs, loadavg())
	}
	measure("quiet")
	// The writer: about one write a millisecond, each a read of the DETS
	// row and a write of both stores, as dual-write does.
	w := cl.Eval(0, `Ids = persistent_term:get(migctl_bench_ids),
		spawn(fun() ->
			Start = erlang:monotonic_time(millisecond),
			One = fun() -> Id = element(rand:uniform(tuple_size(Ids)), Ids),
				[{_, S}] = dets:lookup(bench_sessions, Id),
				S2 = S#{last_accessed => erlang:system_time(millisecond)},
				ok = dets:insert(bench_sessions, {Id, S2}),
				ok = mnesia:dirty_write({erlmcp_session, Id, S2, 0}) end,
			Upto = fun Upto(I, Due) when I >= Due -> I; Upto(I, Due) -> One(), Upto(I + 1, Due) end,
			Loop = fun Loop(I) -> I2 = Upto(I, erlang:monotonic_time(millisecond) - Start),
				receive {stop, From} -> From ! {written, I2, erlang:monotonic_time(millisecond) - Start}
				after 5 -> Loop(I2) end end,
			Loop(0) end)`, nil)
	pid, ok := w.(erl.Pid)
	require.True(t, ok, "writer: %v", w)
	stopped := false
	stop := func() erl.Term {
		stopped = true
		return cl.Eval(0, `P ! {stop, self()}, receive {written, N, Ms} -> {N, Ms} after 10000 -> exit(P, kill), timeout end`, map[string]erl.Term{"P": pid})
	}
	t.Cleanup(func() {
		if !stopped {
			stop()
		}
	})
	time.Sleep(2 * time.Second)
	measure("under-load")
	t.Logf("writer: {writes, ms} = %v", stop())
}

// loadavg is the machine's 1-minute load average, for the BENCH lines:
// the machine is shared.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "load ?"
	}
	return "load " + strings.Fields(string(b))[0]
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
