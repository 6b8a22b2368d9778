package cluster_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/erl"
	"github.com/erlmcp/migctl/testkit"
)

// recorderCoverage is what node i's change recorder says of the session
// table: whether it is subscribed, since when (-1: not covered), and how
// many subscriptions it found dropped by Mnesia.
func recorderCoverage(t *testing.T, tk *testkit.Cluster, i int) (bool, int64, int64) {
	t.Helper()
	r := tk.Eval(i, `I = #{tables := Ts} = migctl_recorder:info(),
	    D = maps:get(dropped, I, 0),
	    [{S, Since}] = [{S, case Since of undefined -> -1; _ -> Since end}
	                    || #{table := erlmcp_session, subscribed := S, since := Since} <- Ts],
	    {S, Since, D}`, nil)
	tt, ok := r.(erl.Tuple)
	require.True(t, ok && len(tt) == 3, "info: %v", r)
	return tt[0] == true, toInt(tt[1]), toInt(tt[2])
}

// TestRecorderCoverageAcrossCopyRemoval: Mnesia drops a node's table
// subscribers without a word when the node's copy is deleted
// (del_table_copy) and does not restore them when the copy is added back,
// so a recorder that trusted its subscription would claim coverage it
// does not have. It must report no coverage while the node has no copy,
// and cover the table again, from after the re-add, both when migctl
// tells it (resubscribe) and when nobody does (its periodic check).
func TestRecorderCoverageAcrossCopyRemoval(t *testing.T) {
	t.Run("resubscribe", func(t *testing.T) { runRecorderCopy(t, true) })
	t.Run("periodic", func(t *testing.T) { runRecorderCopy(t, false) })
}

// runRecorderCopy removes node b's copy of the session table and adds it
// back, telling its recorder (resubscribe) or not, and checks what the
// recorder covers meanwhile and after.
func runRecorderCopy(t *testing.T, tell bool) {
	tk := testkit.Start(t, testkit.Options{Nodes: 2, Mnesia: true, Backend: "erlmcp_session_mnesia"})
	const b = 1 // the node whose copy goes and comes back; node 0 keeps one
	atomicOK := erl.Tuple{erl.Atom("atomic"), erl.Atom("ok")}
	bName := erl.Atom(tk.Nodes[b].Name)
	now := func(i int) int64 { return toInt(tk.Eval(i, `erlang:system_time(millisecond)`, nil)) }
	delCopy := func() {
		require.Equal(t, atomicOK, tk.Eval(0, `mnesia:del_table_copy(erlmcp_session, B)`, map[string]erl.Term{"B": bName}))
	}
	addCopy := func() {
		require.Equal(t, atomicOK, tk.Eval(0, `mnesia:add_table_copy(erlmcp_session, B, disc_copies)`, map[string]erl.Term{"B": bName}))
		require.Equal(t, erl.Atom("ok"), tk.Eval(b, `mnesia:wait_for_tables([erlmcp_session], 10000)`, nil))
	}
	resubscribe := func() { tk.Eval(b, `migctl_recorder ! resubscribe, ok`, nil) }
	inMnesiasList := func() erl.Term {
		return tk.Eval(b, `lists:member(whereis(migctl_recorder), mnesia:table_info(erlmcp_session, subscribers))`, nil)
	}
	// requireRecorded writes a session on node 0 and requires node b's
	// recorder to have recorded the write at or after after.
	requireRecorded := func(id string, after int64) {
		t.Helper()
		require.Equal(t, atomicOK, tk.Eval(0, `Now = erlang:system_time(millisecond),
		    mnesia:transaction(fun() -> mnesia:write({erlmcp_session, Id, #{id => Id}, Now}) end)`,
			map[string]erl.Term{"Id": []byte(id)}))
		// A transaction returns once its coordinator (node 0) committed:
		// node b applies it, and reports it to its subscribers, a little
		// later.
		var r erl.Term
		require.Eventually(t, func() bool {
			r = tk.Eval(b, `migctl_recorder:lookup(erlmcp_session, [Id])`, map[string]erl.Term{"Id": []byte(id)})
			l, ok := r.(erl.List)
			return ok && len(l) == 1
		}, 3*time.Second, 20*time.Millisecond, "%s not recorded on %s: %v", id, bName, r)
		e := r.(erl.List)[0].(erl.Tuple)
		require.Equal(t, erl.Atom("write"), e[1])
		require.GreaterOrEqual(t, toInt(e[2]), after)
	}

	sub, since0, dropped0 := recorderCoverage(t, tk, b)
	require.True(t, sub, "the recorder on %s subscribed at start", bName)
	require.Positive(t, since0)
	requireRecorded("before", since0)

	if !tell {
		// Nobody tells the recorder, and nothing asks it (info/0 checks
		// on its own) until it is back: only its periodic check can find
		// that the subscription is gone and take it again, which Mnesia's
		// own list of the table's subscribers on node b then shows.
		removed := now(b)
		delCopy()
		addCopy()
		require.Equal(t, false, inMnesiasList(),
			"Mnesia restored the subscription itself: this test no longer tests anything")
		require.Eventually(t, func() bool { return inMnesiasList() == true },
			5*time.Second, 100*time.Millisecond, "the recorder on %s did not notice the dropped subscription", bName)
		sub, since, dropped := recorderCoverage(t, tk, b)
		require.True(t, sub)
		require.GreaterOrEqual(t, since, removed, "coverage starts after the copy was removed")
		require.Equal(t, dropped0+1, dropped)
		requireRecorded("after-periodic", since)
		return
	}

	delCopy()
	resubscribe()
	sub, since, dropped := recorderCoverage(t, tk, b)
	require.False(t, sub, "no copy on %s, so no subscription", bName)
	require.EqualValues(t, -1, since)
	require.Equal(t, dropped0+1, dropped)
	// Its retries fail while the node has no copy (Mnesia answers
	// {error, {not_active_local, Tab}}) and are not taken for a
	// subscription.
	time.Sleep(300 * time.Millisecond)
	sub, since, _ = recorderCoverage(t, tk, b)
	require.False(t, sub)
	require.EqualValues(t, -1, since)

	readded := now(b)
	addCopy()
	resubscribe()
	require.Eventually(t, func() bool { s, _, _ := recorderCoverage(t, tk, b); return s },
		5*time.Second, 50*time.Millisecond, "the recorder on %s did not subscribe again", bName)
	_, since, dropped = recorderCoverage(t, tk, b)
	require.GreaterOrEqual(t, since, readded, "coverage starts after the copy came back")
	require.Equal(t, dropped0+1, dropped)
	require.Equal(t, true, inMnesiasList())
	requireRecorded("after-resubscribe", since)
}
