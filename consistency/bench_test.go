package consistency_test

import (
	"context"
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
	"github.com/erlmcp/migctl/internal/benchkit"
	"github.com/erlmcp/migctl/testkit"
)

// TestBenchConsistency is issue 4's "Speed" at MIGCTL_BENCH_N sessions
// (default 100000): DETS on one node against Mnesia replicated on three,
// full check next to the native in-node comparison, 100 scattered
// differences, a 10,000-session sample. It runs only when MIGCTL_BENCH is
// set (make bench), and prints BENCH lines.
func TestBenchConsistency(t *testing.T) {
	if os.Getenv("MIGCTL_BENCH") == "" {
		t.Skip("set MIGCTL_BENCH=1 to run the consistency benchmark")
	}
	n := 100000
	if v, err := strconv.Atoi(os.Getenv("MIGCTL_BENCH_N")); err == nil && v > 0 {
		n = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	// No application: the DETS file is a migctl-opened one, created with
	// slots sized for n (the application's own table, grown row by row,
	// passes DETS's 2 GB limit before 1M sessions).
	cl := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true})
	file := filepath.Join(cl.Nodes[0].Dir, "bench_sessions.dets")
	t0 := time.Now()
	require.Equal(t, erl.Atom("ok"), cl.Eval(0, `P = spawn(fun() ->
			R = erlmcp_fixture_seed:seed(dets, #{file_path => F, table_name => bench_sessions}, N, 42),
			persistent_term:put(migctl_bench_seed, R),
			{ok, T} = dets:open_file(bench_sessions, [{file, F}, {access, read}]),
			Copy = fun(Rows) ->
				{atomic, ok} = mnesia:transaction(fun() -> mnesia:write_lock_table(erlmcp_session),
					lists:foreach(fun({I, S}) -> mnesia:write({erlmcp_session, I, S, 0}) end, Rows) end) end,
			Rest = dets:foldl(fun(Row, Acc) when length(Acc) >= 999 -> Copy([Row | Acc]), [];
			                     (Row, Acc) -> [Row | Acc] end, [], T),
			Copy(Rest),
			dets:close(T),
			persistent_term:put(migctl_bench_copied, true) end),
		ok`, map[string]erl.Term{"F": file, "N": n}))
	for {
		if cl.Call(0, "persistent_term", "get", erl.Atom("migctl_bench_copied"), false) == true {
			break
		}
		if r := cl.Call(0, "persistent_term", "get", erl.Atom("migctl_bench_seed"), erl.Atom("pending")); r != erl.Atom("pending") {
			require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(n)}, r)
		}
		time.Sleep(time.Second)
	}
	t.Logf("setup %d sessions in %s", n, time.Since(t0))
	src, err := backends.Open(cl.Client(), cl.Nodes[0].Name, backends.Spec{Kind: backends.KindDETS, Table: "bench_sessions", File: file})
	require.NoError(t, err)
	tgt, err := backends.Open(cl.Client(), cl.Nodes[1].Name, backends.DefaultSpec(backends.KindMnesia))
	require.NoError(t, err)
	opts := consistency.Options{Client: cl.Client()}
	runs := 3
	if v, err := strconv.Atoi(os.Getenv("MIGCTL_BENCH_RUNS")); err == nil && v > 0 {
		runs = v
	}
	// MIGCTL_BENCH_PARTS (full,sample,diff; default all) picks the
	// measurements: the setup at 1M sessions takes minutes.
	part := func(p string) bool {
		v := os.Getenv("MIGCTL_BENCH_PARTS")
		return v == "" || slices.Contains(strings.Split(v, ","), p)
	}
	if part("full") {
		full, err := benchkit.BenchFull(ctx, src, tgt, cl.Nodes[0].Name, runs, opts)
		require.NoError(t, err)
		t.Log(full)
		require.True(t, full.Report.Clean())
		require.EqualValues(t, n, full.Report.Processed)
	}
	for _, m := range []consistency.SampleMethod{consistency.SampleAuto, consistency.SampleSlots, consistency.SampleSlotsLookup, consistency.SampleHashRanges} {
		o := opts
		o.SampleMethod = m
		if !part("sample") {
			break
		}
		sample, err := benchkit.BenchSample(ctx, src, tgt, 10000, runs, o)
		require.NoError(t, err)
		t.Logf("%s (method %q)", sample, m)
	}

	if !part("diff") {
		return
	}
	diff, ids, err := benchkit.BenchDifferences(ctx, src, tgt, 100, opts)
	require.NoError(t, err)
	t.Log(diff)
	require.Equal(t, len(ids), diff.Found, "every injected difference is found")
	require.Len(t, diff.Report.Differences, 100)
}
