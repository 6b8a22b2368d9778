package migrate

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
)

// TestSetPhase2FromPhase3: `phase set phase2` from phase3 is the way back
// an operator may take instead of phase rollback. The old store still holds
// what phase3 deleted, so phase2 must not fall back to it after a miss
// (that served the deleted session and copied it back into Mnesia), and a
// percentage below 100 (which reads the old store for the other sessions)
// is refused until the reverse backfill is complete.
func TestSetPhase2FromPhase3(t *testing.T) {
	const n = 300
	cl, _, m := dualWriteNode(t, n, 11)
	ctx := tctx(t, 90*time.Second)
	_, err := m.SetPhase(ctx, Phase1, ChangeOptions{})
	require.NoError(t, err)
	_, err = m.Backfill(ctx, BackfillOptions{NoThrottle: true})
	require.NoError(t, err)
	_, err = m.SetPhase(ctx, Phase2, ChangeOptions{Percent: 100})
	require.NoError(t, err)
	_, err = m.SetPhase(ctx, Phase3, ChangeOptions{Force: true}) // no reads to judge the error rate by
	require.NoError(t, err)

	// Clients delete sessions in phase3: gone from Mnesia, still in DETS.
	ids := cl.Eval(0, `Ids = lists:sublist(lists:sort(mnesia:dirty_all_keys(erlmcp_session)), 20),
	    [ok = erlmcp_session_store:delete(Id) || Id <- Ids], Ids`, nil).(erl.List)
	require.Len(t, ids, 20)
	where := func() [2]int64 {
		r := cl.Eval(0, `{length([I || I <- Ids, dets:lookup(erlmcp_sessions_dets, I) =/= []]),
		    length([I || I <- Ids, mnesia:dirty_read(erlmcp_session, I) =/= []])}`,
			map[string]erl.Term{"Ids": ids}).(erl.Tuple)
		return [2]int64{erl.Int64(r[0]), erl.Int64(r[1])}
	}
	require.Equal(t, [2]int64{20, 0}, where(), "{in DETS, in Mnesia}")

	// Below 100 %: refused, nothing changed.
	_, err = m.SetPhase(ctx, Phase2, ChangeOptions{Percent: 50})
	require.ErrorIs(t, err, ErrGate)
	require.Contains(t, err.Error(), "reverse_backfill_complete")
	require.Contains(t, err.Error(), "migctl phase rollback")
	st, err := m.ShowPhase(ctx)
	require.NoError(t, err)
	require.Equal(t, Phase3, st.Phase)

	// At 100 %: accepted, without the fallback; the deleted sessions stay
	// deleted when clients ask for them.
	rec, err := m.SetPhase(ctx, Phase2, ChangeOptions{Percent: 100})
	require.NoError(t, err)
	require.True(t, rec.NoFallback)
	st, err = m.ShowPhase(ctx)
	require.NoError(t, err)
	require.Equal(t, Phase2, st.Phase)
	require.False(t, st.Fallback, "phase2 falls back to the old store")
	served := cl.Eval(0, `length([Id || Id <- Ids, erlmcp_session_store:fetch(Id) =/= {error, not_found}])`,
		map[string]erl.Term{"Ids": ids})
	require.EqualValues(t, 0, erl.Int64(served), "sessions deleted in phase3 served by phase2")
	require.Equal(t, [2]int64{20, 0}, where(), "{in DETS, in Mnesia}: deleted sessions copied back")

	// Lowering the percentage (or turning the fallback on) waits for the
	// reverse backfill.
	_, err = m.SetPhase(ctx, Phase2, ChangeOptions{Percent: 50})
	require.ErrorIs(t, err, ErrGate)
	require.Contains(t, err.Error(), "backfill --reverse")
	rec, err = m.SetPhase(ctx, Phase2, ChangeOptions{Percent: 100})
	require.NoError(t, err)
	require.Equal(t, "unchanged", rec.State, "the fallback stays off")

	_, err = m.Backfill(ctx, BackfillOptions{Reverse: true, NoThrottle: true})
	require.NoError(t, err)
	require.Equal(t, [2]int64{0, 0}, where(), "{in DETS, in Mnesia} after the reverse backfill")
	_, err = m.SetPhase(ctx, Phase2, ChangeOptions{Percent: 50})
	require.NoError(t, err)
	st, err = m.ShowPhase(ctx)
	require.NoError(t, err)
	require.True(t, st.Fallback)
}
