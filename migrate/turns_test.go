package migrate

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBackfillUnderLoadNoClientErrors: issue 13's first point. A backfill
// runs inside the store server, batch by batch, while the application's
// own calls go through the same server; none of them may fail. The DETS
// node takes live traffic that inserts new sessions all the time (so the
// traversal's file moves under it and the pass must look again at what it
// may have missed), and the pass must end without listing every key in
// one turn of the server (the listing held the server for seconds at
// 900k sessions: 464 client errors in the big run). Then every session
// in DETS is in Mnesia with the same value, no client call failed, and
// the load generator's verify finds nothing lost.
func TestBackfillUnderLoadNoClientErrors(t *testing.T) {
	cl, _, m := dualWriteNode(t, 40000, 13)
	ctx := tctx(t, 5*time.Minute)
	startLoad(t, cl, 400, 40000) // a fresh key space: mostly inserts
	defer closeLoad(cl)
	time.Sleep(time.Second)
	_, err := m.SetPhase(ctx, Phase1, ChangeOptions{Reason: "test"})
	require.NoError(t, err)
	before := hybridCounters(t, m, cl.Nodes[0].Name)

	rep, err := m.Backfill(ctx, BackfillOptions{BatchSize: 1000, Limits: Limits{MaxSchedUtil: 1.1, MaxRunQueue: 1000}})
	require.NoError(t, err)
	t.Logf("backfill: %+v in %.1fs", rep.Record.Stats, rep.Record.Seconds)
	after := hybridCounters(t, m, cl.Nodes[0].Name)
	time.Sleep(time.Second)
	stats := stopLoad(t, cl)
	t.Logf("load: %s", describe(stats[0]))

	// The pass ended by reading the slots the traffic rewrote, not by a
	// listing of every key in one turn.
	require.Equal(t, before["backfill_key_listings"], after["backfill_key_listings"], "a listing of every key in one turn")
	require.Greater(t, after["backfill_slot_passes"], before["backfill_slot_passes"], "the traffic wrote during the pass: the touched slots are read again")
	require.Greater(t, mapInt(stats[0], "ops"), int64(100), "traffic ran")
	require.Zero(t, mapInt(stats[0], "errors"), "client calls failed during the backfill")

	// Every DETS session is in Mnesia, equal (dual-writes run; the load
	// is stopped, so nothing is in flight).
	requireDetsInMnesia(t, cl, 40000)
	v := verifyLoad(t, cl, "{mnesia, erlmcp_session}")
	t.Logf("verify: %s", describe(v[0]))
	require.Zero(t, mapInt(v[0], "lost"))
	require.Zero(t, mapInt(v[0], "wrong_value"))
	require.Zero(t, mapInt(v[0], "resurrected"))
}

func hybridCounters(t *testing.T, m *Migrator, node string) map[string]int64 {
	t.Helper()
	st := m.nodeStatus(tctx(t, 30*time.Second), node)
	require.True(t, st.Installed)
	return st.Counters
}
