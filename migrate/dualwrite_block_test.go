package migrate

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
)

// TestPhase1WritesNotHeldByABlockedTable: Mnesia stops every write to a
// table, dirty ones included, while a new disc_copies replica of it writes
// the whole table to its disc (mnesia_loader's last step: the table's
// where_to_commit is {blocked, _} on every node). At 1.8M sessions that
// outlasted the application's 5 s calls on every node, because phase1's
// write of the new store held the store server. Here the session table is
// blocked the same way, on every node, for 8 s under traffic in phase1:
// no client call may fail; the writes made meanwhile wait on their node
// (status dual_writes_pending) and the phase2 gate refuses until they are
// applied. On one node the writer holding them is killed: what it held is
// counted as failed dual-writes, phase2 is refused until a backfill ran
// again, and that backfill repairs it (deletes included: a session
// deleted meanwhile must not stay in Mnesia). Once the table is released
// every write reaches every replica and nothing a client was told is lost.
func TestPhase1WritesNotHeldByABlockedTable(t *testing.T) {
	cl, m := replicaCluster(t, 2000, 71)
	ctx := tctx(t, 4*time.Minute)
	_, err := m.SetPhase(ctx, Phase1, ChangeOptions{Reason: "test"})
	require.NoError(t, err)
	_, err = m.Backfill(ctx, BackfillOptions{Reason: "test", RatePerSec: 6000})
	require.NoError(t, err)

	released := false
	release := func() {
		for i := range cl.Nodes {
			require.Equal(t, erl.Atom("ok"), evalTerm(t, cl, i, `mnesia_controller:unblock_table(erlmcp_session), ok`, nil))
		}
		released = true
	}
	t.Cleanup(func() {
		if !released {
			release()
		}
	})
	for i := range cl.Nodes {
		require.Equal(t, erl.Atom("ok"), evalTerm(t, cl, i, `mnesia_controller:block_table(erlmcp_session), ok`, nil))
	}
	blockedAt := time.Now()

	// While blocked: the writes are queued, not lost, and phase2 waits.
	time.Sleep(2 * time.Second)
	st, err := m.ShowPhase(ctx)
	require.NoError(t, err)
	var queued int64
	for _, n := range st.Nodes {
		t.Logf("%s: %d dual-writes pending", n.Node, n.DualWritesPending)
		queued += n.DualWritesPending
	}
	require.Positive(t, queued, "no write waited for the blocked table: the traffic did not reach the Mnesia side")
	_, err = m.SetPhase(ctx, Phase2, ChangeOptions{Reason: "test", Percent: 100})
	require.ErrorIs(t, err, ErrGate)
	require.ErrorContains(t, err, "dual_writes_applied")
	require.Equal(t, true, evalTerm(t, cl, 0, `exit(whereis(migctl_dual_writer), kill)`, nil))

	time.Sleep(8*time.Second - time.Since(blockedAt))
	release()

	require.Eventually(t, func() bool {
		st, err := m.ShowPhase(ctx)
		if err != nil {
			return false
		}
		for _, n := range st.Nodes {
			if n.DualWritesPending != 0 {
				return false
			}
		}
		return true
	}, time.Minute, 200*time.Millisecond, "the queued dual-writes were never applied")
	st, err = m.ShowPhase(ctx)
	require.NoError(t, err)
	for i, n := range st.Nodes {
		t.Logf("%s: %d failed dual-writes", n.Node, n.Counters["secondary_write_failures"])
		if i == 0 {
			require.Positive(t, n.Counters["secondary_write_failures"], "the writes lost with the writer were not counted")
		} else {
			require.Zero(t, n.Counters["secondary_write_failures"], "%s", n.Node)
		}
	}
	_, err = m.SetPhase(ctx, Phase2, ChangeOptions{Reason: "test", Percent: 100})
	require.ErrorIs(t, err, ErrGate, "phase2 allowed with dual-writes lost since the backfill")
	_, err = m.Backfill(ctx, BackfillOptions{Reason: "test", RatePerSec: 6000})
	require.NoError(t, err)
	_, err = m.SetPhase(ctx, Phase2, ChangeOptions{Reason: "test", Percent: 100})
	require.NoError(t, err, "phase2 refused after the backfill that repaired the lost writes")

	for i := range cl.Nodes {
		s := evalTerm(t, cl, i, `maps:without([last_errors], erlmcp_loadgen:stats(lg))`, nil).(erl.Map)
		t.Logf("load node %d: %s", i, describe(s))
		require.Greater(t, mapInt(s, "ops"), int64(300), "node %d: the traffic did not run", i)
		require.Zero(t, mapInt(s, "errors"), "node %d: client calls failed while the table was blocked", i)
	}
	requireReplicatedUnion(t, cl)
	// And the other way: Mnesia holds no session that no DETS file has
	// (a delete lost with the writer, not applied by the backfill).
	extra := evalTerm(t, cl, 0, `
		Union = lists:append([erpc:call(N, dets, select, [erlmcp_sessions_dets, [{{'$1', '_'}, [], ['$1']}]])
		                      || N <- mnesia:system_info(running_db_nodes)]),
		length(mnesia:dirty_all_keys(erlmcp_session) -- Union)`, nil)
	require.Zero(t, erl.Int64(extra), "sessions deleted from DETS are still in Mnesia")
}
