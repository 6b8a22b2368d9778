package migrate

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
)

// TestBackfillCheckpointEpoch: a backfill interrupted in phase1, then
// phase0 (writes reach the old store only) and phase1 again. Resuming the
// old checkpoint would leave the sessions behind its cursor that changed in
// phase0 stale in Mnesia, and backfill_complete would pass. The checkpoint
// belongs to the epoch it was made in: the rerun starts the pass over.
func TestBackfillCheckpointEpoch(t *testing.T) {
	const n = 2000
	cl, _, m := dualWriteNode(t, n, 13)
	ctx := tctx(t, 90*time.Second)
	_, err := m.SetPhase(ctx, Phase1, ChangeOptions{})
	require.NoError(t, err)

	// Interrupted (migctl killed) after its 3rd batch.
	var batches atomic.Int32
	m.hook = func(step string) error {
		if strings.HasPrefix(step, "backfill:batch:") && batches.Add(1) == 3 {
			return errKilled
		}
		return nil
	}
	opts := BackfillOptions{BatchSize: 100, CallBudget: time.Millisecond, NoThrottle: true}
	_, err = m.Backfill(ctx, opts)
	require.ErrorIs(t, err, errKilled)
	m.hook = nil
	copied := erl.Int64(cl.Eval(0, `mnesia:table_info(erlmcp_session, size)`, nil))
	require.Positive(t, copied)
	require.Less(t, copied, int64(n))

	// phase0: the application updates sessions the backfill had copied;
	// only DETS gets the updates.
	_, err = m.SetPhase(ctx, Phase0, ChangeOptions{})
	require.NoError(t, err)
	ids := cl.Eval(0, `Ids = lists:sublist(mnesia:dirty_all_keys(erlmcp_session), 50),
	    timer:sleep(2),
	    [begin [{_, S}] = dets:lookup(erlmcp_sessions_dets, Id),
	           ok = erlmcp_session_store:store(Id, S#{metadata => #{<<"mark">> => <<"phase0">>},
	                                                   last_accessed => erlang:system_time(millisecond)})
	     end || Id <- Ids],
	    Ids`, nil).(erl.List)
	require.Len(t, ids, 50)
	marked := func() [2]int64 {
		r := cl.Eval(0, `Mark = fun([{_, _, S, _}]) -> maps:get(metadata, S); ([{_, S}]) -> maps:get(metadata, S); (_) -> none end,
		    {length([I || I <- Ids, Mark(dets:lookup(erlmcp_sessions_dets, I)) =:= #{<<"mark">> => <<"phase0">>}]),
		     length([I || I <- Ids, Mark(mnesia:dirty_read(erlmcp_session, I)) =:= #{<<"mark">> => <<"phase0">>}])}`,
			map[string]erl.Term{"Ids": ids}).(erl.Tuple)
		return [2]int64{erl.Int64(r[0]), erl.Int64(r[1])}
	}
	require.Equal(t, [2]int64{50, 0}, marked(), "{DETS, Mnesia} with the phase0 update")

	// phase1 again, and the backfill is rerun.
	_, err = m.SetPhase(ctx, Phase1, ChangeOptions{})
	require.NoError(t, err)
	rep, err := m.Backfill(ctx, opts)
	require.NoError(t, err)
	require.Equal(t, [2]int64{50, 50}, marked(), "{DETS, Mnesia} with the phase0 update after the backfill")
	require.False(t, rep.Record.Resumed, "resumed a checkpoint of another epoch")
	_, err = m.SetPhase(ctx, Phase2, ChangeOptions{Percent: 10})
	require.NoError(t, err)
}
