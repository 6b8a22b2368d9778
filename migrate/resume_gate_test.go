package migrate

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
)

// TestResumedBackfillGate: a secondary write that fails in phase1 after the
// backfill has copied that session leaves Mnesia with the old value, and
// the backfill does not read the session again. The phase2 gate refuses
// for it until a backfill starts after the failure. It must also refuse
// when the backfill that saw the failure was interrupted and then resumed
// from its checkpoints: the resumed run does not copy again what the
// interrupted run had copied before the failure.
func TestResumedBackfillGate(t *testing.T) {
	const n = 2000
	cl, j, m := dualWriteNode(t, n, 7)
	ctx := tctx(t, 120*time.Second)
	_, err := m.SetPhase(ctx, Phase1, ChangeOptions{Reason: "resume gate test"})
	require.NoError(t, err)

	// The backfill is interrupted (migctl killed) after its 3rd batch.
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

	// A session the backfill has copied is updated by the application
	// while Mnesia refuses writes: the update is acknowledged (phase1
	// reads DETS) and counted as a secondary write failure.
	id := cl.Eval(0, `hd(mnesia:dirty_all_keys(erlmcp_session))`, nil)
	res := cl.Eval(0, `{atomic, ok} = mnesia:change_table_access_mode(erlmcp_session, read_only),
	    [{_, S}] = dets:lookup(erlmcp_sessions_dets, Id),
	    R = erlmcp_session_store:store(Id, S#{metadata => #{<<"mark">> => <<"after the copy">>},
	                                          last_accessed => erlang:system_time(millisecond)}),
	    {atomic, ok} = mnesia:change_table_access_mode(erlmcp_session, read_write),
	    {R, counters:get(persistent_term:get({erlmcp_session_backend_hybrid, counters}), 6)}`,
		map[string]erl.Term{"Id": id}).(erl.Tuple)
	require.Equal(t, erl.Atom("ok"), res[0], "store acknowledged")
	require.EqualValues(t, 1, erl.Int64(res[1]), "one secondary write failure")
	mark := func() erl.Tuple {
		return cl.Eval(0, `M = fun([{_, _, S, _}]) -> S; ([{_, S}]) -> S; ([]) -> none end,
		    Mark = fun(none) -> none; (S) -> maps:get(<<"mark">>, maps:get(metadata, S), none) end,
		    {Mark(M(dets:lookup(erlmcp_sessions_dets, Id))), Mark(M(mnesia:dirty_read(erlmcp_session, Id)))}`,
			map[string]erl.Term{"Id": id}).(erl.Tuple)
	}
	require.Equal(t, erl.Tuple{[]byte("after the copy"), erl.Atom("none")}, mark(), "{DETS, Mnesia}")

	// The rerun resumes from the checkpoint and completes.
	m = newMigrator(t, cl, j)
	rep, err := m.Backfill(ctx, opts)
	require.NoError(t, err)
	require.True(t, rep.Record.Resumed)
	// The resumed pass is the same pass on the node (its traversal and
	// touched set live in the store server): at its end it reads again the
	// slots the application wrote during the pass, and so repairs this
	// session. The gate cannot tell which failures a pass repaired (one
	// after the pass's last read of its slots is not): it refuses all the
	// same.
	require.Equal(t, erl.Tuple{[]byte("after the copy"), []byte("after the copy")}, mark(),
		"the resumed pass reads the touched session again")

	// So phase2 must wait for another backfill.
	_, err = m.SetPhase(ctx, Phase2, ChangeOptions{Percent: 10})
	require.ErrorIs(t, err, ErrGate, "phase2 with a session Mnesia missed")
	require.Contains(t, err.Error(), "secondary write failure")
	rep, err = m.Backfill(ctx, opts)
	require.NoError(t, err)
	require.False(t, rep.Record.Resumed)
	require.Equal(t, erl.Tuple{[]byte("after the copy"), []byte("after the copy")}, mark(), "{DETS, Mnesia}")
	_, err = m.SetPhase(ctx, Phase2, ChangeOptions{Percent: 10})
	require.NoError(t, err)
}
