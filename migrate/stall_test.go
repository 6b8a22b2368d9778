package migrate

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
)

// TestBackfillWaitsOutStalledStoreServer: the second 900k big run failed
// when node 1's store server stalled for ~62 s (erlmcp's cleanup of the
// DETS file runs in it) and one batch outlived its timeout; the whole
// backfill stopped. Here the
// store server is really stalled (suspended from a process on its node,
// for several step timeouts) while the backfill runs and traffic goes
// through the same server. The backfill must wait the stall out and
// finish: the batches that timed out are counted as retries, nothing is
// reported as failed, and every DETS session ends in Mnesia with its value.
func TestBackfillWaitsOutStalledStoreServer(t *testing.T) {
	cl, _, m := dualWriteNode(t, 20000, 29)
	ctx := tctx(t, 5*time.Minute)
	startLoad(t, cl, 100, 20000)
	defer closeLoad(cl)
	_, err := m.SetPhase(ctx, Phase1, ChangeOptions{Reason: "test"})
	require.NoError(t, err)

	// The stall: 1 s after the backfill starts, the store server is
	// suspended for 2 s (4 step timeouts; under the clients' 5 s). The
	// suspension is the suspending process's: it ends when that process
	// does, so a failed test cannot leave the server frozen.
	stall := `
		P = erlmcp_session_backend_hybrid:server(),
		Me = self(),
		spawn(fun() ->
		          timer:sleep(1000),
		          true = erlang:suspend_process(P),
		          Me ! {suspended, erlang:system_time(millisecond)},
		          timer:sleep(2000),
		          true = erlang:resume_process(P)
		      end),
		ok`
	require.Equal(t, erl.Atom("ok"), evalTerm(t, cl, 0, stall, nil))

	rep, err := m.Backfill(ctx, BackfillOptions{BatchSize: 200, RatePerSec: 4000, StepTimeout: 500 * time.Millisecond,
		CallBudget: 200 * time.Millisecond, Limits: Limits{MaxSchedUtil: 1.1, MaxRunQueue: 1000}})
	require.NoError(t, err, "the backfill stopped at a stall of the store server")
	st := rep.PerNode[cl.Nodes[0].Name]
	t.Logf("backfill: %+v in %.1fs", st, rep.Record.Seconds)
	require.GreaterOrEqual(t, rep.Record.Seconds, 3.0, "the backfill ended before the stall: the test proved nothing")
	require.GreaterOrEqual(t, st.Retries, int64(1), "no batch timed out: the stall did not hit the backfill")
	require.GreaterOrEqual(t, st.Scanned, int64(20000))

	time.Sleep(500 * time.Millisecond)
	stats := stopLoad(t, cl)
	t.Logf("load: %s", describe(stats[0]))
	requireDetsInMnesia(t, cl, 19999)
	v := verifyLoad(t, cl, "{mnesia, erlmcp_session}")
	require.Zero(t, mapInt(v[0], "lost"))
}

// TestBackfillLeavesTheServerOnLockConflict: a transaction elsewhere holds
// a lock on the Mnesia table for longer than a client waits (erlmcp's
// cleanup of many sessions that expire together does, on every node at
// once). A batch must not wait for the table lock inside the store
// server, where every application call of the node would wait with it:
// it gives up, migctl tries it again later, and the backfill still ends
// with every session copied. With the traffic on, no client call fails.
func TestBackfillLeavesTheServerOnLockConflict(t *testing.T) {
	cl, _, m := dualWriteNode(t, 20000, 37)
	ctx := tctx(t, 5*time.Minute)
	startLoad(t, cl, 100, 20000)
	defer closeLoad(cl)
	_, err := m.SetPhase(ctx, Phase1, ChangeOptions{Reason: "test"})
	require.NoError(t, err)

	// 1 s after the backfill starts, a transaction takes a write lock on
	// one session row and keeps it 7 s (clients give up after 5 s).
	hold := `
		spawn(fun() ->
		          timer:sleep(1000),
		          {atomic, ok} = mnesia:transaction(fun() ->
		              [K | _] = mnesia:dirty_all_keys(erlmcp_session),
		              _ = mnesia:read(erlmcp_session, K, write),
		              timer:sleep(7000)
		          end),
		          ok
		      end),
		ok`
	require.Equal(t, erl.Atom("ok"), evalTerm(t, cl, 0, hold, nil))

	rep, err := m.Backfill(ctx, BackfillOptions{BatchSize: 200, RatePerSec: 2500,
		Limits: Limits{MaxSchedUtil: 1.1, MaxRunQueue: 1000, MaxStoreQueue: 1000}})
	require.NoError(t, err)
	st := rep.PerNode[cl.Nodes[0].Name]
	t.Logf("backfill: %+v in %.1fs", st, rep.Record.Seconds)
	require.GreaterOrEqual(t, rep.Record.Seconds, 8.0, "the backfill ended before the lock was released: the test proved nothing")
	require.GreaterOrEqual(t, st.Retries, int64(1), "no batch gave up on the lock")

	time.Sleep(500 * time.Millisecond)
	stats := stopLoad(t, cl)
	t.Logf("load: %s", describe(stats[0]))
	require.Greater(t, mapInt(stats[0], "ops"), int64(100), "traffic ran")
	require.Zero(t, mapInt(stats[0], "errors"), "client calls failed: the store server waited for the lock")
	requireDetsInMnesia(t, cl, 19999)
}
