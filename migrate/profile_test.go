package migrate

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/testkit"
)

// TestProfileBackfillTurns is a measuring tool, not a check (skipped
// unless MIGCTL_PROFILE is set): on one node of a 3-node cluster it times
// the native in-node copy and migctl's batches called in a plain loop on
// the node (no Go, no network), and eprof's totals of the store server
// during one more pass, written to $MIGCTL_PROFILE_OUT (default
// /tmp/migctl-backfill.eprof).
func TestProfileBackfillTurns(t *testing.T) {
	if os.Getenv("MIGCTL_PROFILE") == "" {
		t.Skip("set MIGCTL_PROFILE=1 to profile the backfill's turns")
	}
	ctx := tctx(t, 20*time.Minute)
	n := envInt("MIGCTL_BENCH_SESSIONS", 50000)
	cl := testkit.Start(t, testkit.Options{Nodes: 3, Mnesia: true, Backend: "erlmcp_session_backend_hybrid",
		AppEnv: hybridEnv("erlmcp_session_dets", "erlmcp_session_mnesia", "phase1")})
	r := cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("dets"), erl.Map{}, n, 42)
	require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(n)}, r)
	m := newMigrator(t, cl, newJournal(t))
	st := m.nodeStatus(ctx, cl.Nodes[0].Name) // pushes the agent modules too
	require.True(t, st.Installed)
	out := os.Getenv("MIGCTL_PROFILE_OUT")
	if out == "" {
		out = "/tmp/migctl-backfill.eprof"
	}
	res := cl.Eval(0, `
		Clear = fun() -> {atomic, ok} = mnesia:clear_table(T),
		                 [rpc:call(N, mnesia, dump_log, []) || N <- [node() | nodes()]], ok end,
		Loop = fun L(C, Acc, K) ->
		           case migctl_migrate:backfill_steps(forward, C, B, false, 60000, 1 bsl 30, 250) of
		               {ok, Sc, _, _, _, _, _, true} -> {Acc + Sc, K + 1};
		               {ok, Sc, _, _, _, _, Next, false} -> L(Next, Acc + Sc, K + 1);
		               Err -> Err
		           end end,
		Round = fun() ->
		    Clear(), {Tn, {ok, Nn, _}} = timer:tc(fun() -> migctl_migrate:native_copy(D, T, B) end),
		    Clear(), {Tm, {Nm, Calls}} = timer:tc(fun() -> Loop(<<>>, 0, 0) end),
		    {Tn, Tm, Nn, Nm, Calls} end,
		Rounds = [Round() || _ <- [1, 2, 3]],
		Srv = erlmcp_session_backend_hybrid:server(),
		Clear(),
		eprof:start(), profiling = eprof:start_profiling([Srv]),
		Loop(<<>>, 0, 0),
		eprof:stop_profiling(), eprof:log(Out), eprof:analyze(total), eprof:stop(),
		Rounds`, map[string]erl.Term{"T": erl.Atom(st.Secondary.Table), "D": erl.Atom(st.Primary.Table),
		"B": 1000, "Out": out})
	for _, x := range res.(erl.List) {
		tu := x.(erl.Tuple)
		tn, tm := float64(erl.Int64(tu[0]))/1e6, float64(erl.Int64(tu[1]))/1e6
		t.Logf("native %.2fs, migctl loop on the node %.2fs (ratio %.2f), rows %d/%d, calls %d",
			tn, tm, tn/tm, erl.Int64(tu[2]), erl.Int64(tu[3]), erl.Int64(tu[4]))
	}
	t.Logf("eprof of the store server: %s", out)
	for i := 0; i < 3; i++ {
		cl.Eval(0, `{atomic, ok} = mnesia:clear_table(T), [rpc:call(N, mnesia, dump_log, []) || N <- [node() | nodes()]], ok`,
			map[string]erl.Term{"T": erl.Atom(st.Secondary.Table)})
		t0 := time.Now()
		rep, err := m.Backfill(ctx, BackfillOptions{BatchSize: 1000, NoThrottle: true, Restart: true})
		require.NoError(t, err)
		ps := rep.PerNode[cl.Nodes[0].Name]
		t.Logf("Backfill: %.2fs total, %.2fs recorded, %.2fs in calls to node 0, %d calls", time.Since(t0).Seconds(),
			rep.Record.Seconds, ps.CallSeconds, ps.Batches)
	}
}

func envInt(k string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(k)); err == nil && n > 0 {
		return n
	}
	return def
}
