package migrate

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/testkit"
)

// TestBackfillWriteTime: every row the backfill copies into Mnesia carries
// the write time in the record's last field, as erlmcp_session_mnesia's
// store/3 writes it, not the session's last_accessed (here ten minutes
// old); so does the benchmark's native copy, which writes as the backfill
// does.
func TestBackfillWriteTime(t *testing.T) {
	cl := testkit.Start(t, testkit.Options{Nodes: 1, Mnesia: true, Backend: "erlmcp_session_backend_hybrid",
		AppEnv: hybridEnv("erlmcp_session_dets", "erlmcp_session_mnesia", "phase0")})
	ctx := tctx(t, 120*time.Second)
	m := newMigrator(t, cl, newJournal(t))
	nodeNow := func() int64 { return erl.Int64(evalTerm(t, cl, 0, `erlang:system_time(millisecond)`, nil)) }
	const n = 500
	// Sessions last accessed ten minutes ago (the shortest timeout is 30
	// minutes: none expires during the test).
	r := cl.Call(0, "erlmcp_fixture_seed", "seed", erl.Atom("dets"), erl.Map{erl.Atom("now"): nodeNow() - 10*60*1000}, n, 5)
	require.Equal(t, erl.Tuple{erl.Atom("ok"), int64(n)}, r)
	_, err := m.SetPhase(ctx, Phase1, ChangeOptions{Reason: "write time test"})
	require.NoError(t, err)

	// check returns, for the rows in Mnesia: how many, how many have a last
	// field outside [Before, After], equal to their session's
	// last_accessed, and a last_accessed not older than Before.
	check := func(before, after int64) [4]int64 {
		r := evalTerm(t, cl, 0, `Rows = mnesia:dirty_match_object(erlmcp_session, {erlmcp_session, '_', '_', '_'}),
		    {length(Rows),
		     length([I || {_, I, _, W} <- Rows, W < B orelse W > A]),
		     length([I || {_, I, #{last_accessed := LA}, W} <- Rows, W =:= LA]),
		     length([I || {_, I, #{last_accessed := LA}, _} <- Rows, LA >= B])}`,
			map[string]erl.Term{"B": before, "A": after}).(erl.Tuple)
		return [4]int64{erl.Int64(r[0]), erl.Int64(r[1]), erl.Int64(r[2]), erl.Int64(r[3])}
	}

	before := nodeNow()
	rep, err := m.Backfill(ctx, BackfillOptions{BatchSize: 100, Restart: true, NoThrottle: true})
	require.NoError(t, err)
	after := nodeNow()
	require.EqualValues(t, n, rep.Record.Stats.Written)
	require.Equal(t, [4]int64{n, 0, 0, 0}, check(before, after),
		"backfill: {rows, last field not the write time, last field = last_accessed, recent last_accessed}")

	// The benchmark's reference loop writes the same way.
	cl.Call(0, "mnesia", "clear_table", erl.Atom("erlmcp_session"))
	before = nodeNow()
	tup, err := m.c.Agent(ctx, cl.Nodes[0].Name, "migctl_migrate:native_copy", erl.Atom("erlmcp_sessions_dets"), erl.Atom("erlmcp_session"), 100)
	require.NoError(t, err)
	after = nodeNow()
	require.EqualValues(t, n, erl.Int64(tup[1]))
	require.Equal(t, [4]int64{n, 0, 0, 0}, check(before, after),
		"native copy: {rows, last field not the write time, last field = last_accessed, recent last_accessed}")
}
